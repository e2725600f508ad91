"""/assets: uploads of model photos and backgrounds, read back by their owner only; and
load_job_inputs, the catalog check the /vto routes make before a job is charged."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from command_api.catalog.job_inputs import load_job_inputs
from command_api.problems import ProblemError
from tests.api_factories import make_user
from tests.catalog_factories import (
    API,
    assert_problem,
    create_project,
    image_bytes,
    share,
    snapshot,
    upload_asset,
    upload_product,
)


def test_upload_read_and_list_assets(client: Any, services: Any) -> None:
    owner, other = make_user(services), make_user(services)
    response = client.post(
        f"{API}/assets",
        data={"type": "model", "name": "Studio A"},
        files={"file": ("m.jpg", image_bytes("JPEG", (96, 128)), "image/jpeg")},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    model = response.json()
    assert {k: model[k] for k in ("type", "name", "media_type", "width", "height")} == {
        "type": "model",
        "name": "Studio A",
        "media_type": "image/jpeg",
        "width": 96,
        "height": 128,
    }
    background = upload_asset(client, owner, "background")
    upload_asset(client, other, "model")

    read = client.get(f"{API}/assets/{model['id']}", headers=owner.headers)
    assert read.status_code == 200 and read.json()["id"] == model["id"]
    assert client.get(read.json()["url"]).content == image_bytes("JPEG", (96, 128))
    assert_problem(client.get(f"{API}/assets/{model['id']}", headers=other.headers), 404, "not_found")
    assert_problem(client.get(f"{API}/assets/{uuid4()}", headers=owner.headers), 404, "not_found")

    mine = client.get(f"{API}/assets", headers=owner.headers).json()
    assert [a["id"] for a in mine["items"]] == [background["id"], model["id"]]
    only_models = client.get(f"{API}/assets", params={"type": "model"}, headers=owner.headers).json()
    assert [a["id"] for a in only_models["items"]] == [model["id"]]
    page = client.get(f"{API}/assets", params={"limit": 1}, headers=owner.headers).json()
    assert len(page["items"]) == 1 and page["next_cursor"]


def test_asset_bad_input_changes_nothing(client: Any, services: Any) -> None:
    owner = make_user(services)
    upload_asset(client, owner)
    before = snapshot(services)
    png = image_bytes()
    cases: list[tuple[dict[str, Any], dict[str, Any] | None, int]] = [
        ({"type": "person"}, {"file": ("a.png", png)}, 422),
        ({}, {"file": ("a.png", png)}, 422),
        ({"type": "model"}, None, 422),
        ({"type": "model"}, {"file": ("a.txt", b"plain text", "text/plain")}, 415),
        ({"type": "model"}, {"file": ("a.gif", image_bytes("GIF"), "image/gif")}, 415),
        ({"type": "model"}, {"file": ("a.png", png[:-30])}, 422),
        ({"type": "model"}, {"file": ("a.png", image_bytes(size=(8192 + 1, 64)))}, 422),
        ({"type": "model", "name": "n" * 201}, {"file": ("a.png", png)}, 422),
    ]
    for data, files, status in cases:
        assert_problem(client.post(f"{API}/assets", data=data, files=files, headers=owner.headers), status)
    assert_problem(client.post(f"{API}/assets", json={"type": "model"}, headers=owner.headers), 422)
    assert_problem(client.get(f"{API}/assets/42", headers=owner.headers), 422)
    assert_problem(client.get(f"{API}/assets?type=person", headers=owner.headers), 422)
    assert_problem(client.get(f"{API}/assets?cursor=%00", headers=owner.headers), 400)
    assert snapshot(services) == before


def test_load_job_inputs_checks_access_and_returns_keys(client: Any, services: Any) -> None:
    owner, reader, stranger = make_user(services), make_user(services), make_user(services)
    project = create_project(client, owner)
    other_project = create_project(client, owner, project["collection_id"], "other")
    top = upload_product(client, owner, project["id"], "top", "front")
    back = upload_product(client, owner, project["id"], "top", "back")
    foreign = upload_product(client, owner, other_project["id"])
    share(client, owner, project["id"], reader)
    assets = {
        (who, kind): upload_asset(client, caller, kind)
        for who, caller in (("owner", owner), ("reader", reader))
        for kind in ("model", "background")
    }

    with services.sessions() as session:
        got = load_job_inputs(
            session,
            reader.id,
            project["id"],
            [back["id"], top["id"], back["id"]],
            assets["reader", "model"]["id"],
            assets["reader", "background"]["id"],
        )
        assert got["project_id"] == project["id"] and got["project_owner_id"] == str(owner.id)
        assert [(p["id"], p["category"], p["side"]) for p in got["products"]] == [
            (back["id"], "top", "back"),
            (top["id"], "top", "front"),
        ]
        assert got["products"][0]["storage_key"] == f"products/{back['id']}.png"
        assert got["model"]["storage_key"] == f"assets/{assets['reader', 'model']['id']}.png"
        assert got["background"]["id"] == assets["reader", "background"]["id"]
        assert set(got["model"]) == {"id", "storage_key", "media_type", "width", "height"}
        assert services.storage.exists(got["products"][0]["storage_key"])

        no_background = load_job_inputs(
            session, owner.id, project["id"], [top["id"]], assets["owner", "model"]["id"]
        )
        assert no_background["background"] is None

        refused: list[tuple[tuple[Any, ...], int, str]] = [
            ((stranger.id, project["id"], [top["id"]], assets["owner", "model"]["id"]), 404, "not_found"),
            ((owner.id, str(uuid4()), [top["id"]], assets["owner", "model"]["id"]), 404, "not_found"),
            ((owner.id, "not-a-uuid", [top["id"]], assets["owner", "model"]["id"]), 404, "not_found"),
            ((owner.id, project["id"], [foreign["id"]], assets["owner", "model"]["id"]), 404, "not_found"),
            ((owner.id, project["id"], ["junk"], assets["owner", "model"]["id"]), 404, "not_found"),
            ((owner.id, project["id"], [], assets["owner", "model"]["id"]), 422, "no_products"),
            ((owner.id, project["id"], [top["id"]], assets["reader", "model"]["id"]), 404, "not_found"),
            (
                (owner.id, project["id"], [top["id"]], assets["owner", "background"]["id"]),
                422,
                "wrong_asset_type",
            ),
            (
                (
                    owner.id,
                    project["id"],
                    [top["id"]],
                    assets["owner", "model"]["id"],
                    assets["owner", "model"]["id"],
                ),
                422,
                "wrong_asset_type",
            ),
            (
                (
                    owner.id,
                    project["id"],
                    [top["id"]],
                    assets["owner", "model"]["id"],
                    assets["reader", "background"]["id"],
                ),
                404,
                "not_found",
            ),
        ]
        for args, status, code in refused:
            with pytest.raises(ProblemError) as caught:
                load_job_inputs(session, *args)
            assert (caught.value.status, caught.value.code) == (status, code), args
