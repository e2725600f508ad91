"""/collections: create, list (own, paginated), patch; bad input changes nothing."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from tests.api_factories import make_user
from tests.catalog_factories import API, assert_problem, create_collection, snapshot


def test_create_list_and_patch_collections(client: Any, services: Any) -> None:
    owner, other = make_user(services), make_user(services)
    created = client.post(
        f"{API}/collections", json={"name": "  Spring 2027 ", "description": "drop"}, headers=owner.headers
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "Spring 2027" and body["description"] == "drop"
    assert set(body) == {"id", "name", "description", "created_at", "updated_at"}
    for i in range(4):
        create_collection(client, owner, f"c{i}")
    create_collection(client, other, "not yours")

    first = client.get(f"{API}/collections?limit=2", headers=owner.headers).json()
    assert [c["name"] for c in first["items"]] == ["c3", "c2"] and first["next_cursor"]
    rest = client.get(
        f"{API}/collections", params={"limit": 10, "cursor": first["next_cursor"]}, headers=owner.headers
    ).json()
    assert [c["name"] for c in rest["items"]] == ["c1", "c0", "Spring 2027"]
    assert rest["next_cursor"] is None
    assert [c["name"] for c in client.get(f"{API}/collections", headers=other.headers).json()["items"]] == [
        "not yours"
    ]

    url = f"{API}/collections/{body['id']}"
    renamed = client.patch(url, json={"name": "Spring 2027 final"}, headers=owner.headers)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Spring 2027 final" and renamed.json()["description"] == "drop"
    assert renamed.json()["updated_at"] >= body["updated_at"]
    cleared = client.patch(url, json={"description": None}, headers=owner.headers).json()
    assert cleared["description"] is None and cleared["name"] == "Spring 2027 final"

    assert_problem(client.patch(url, json={"name": "x"}, headers=other.headers), 404, "not_found")
    assert_problem(
        client.patch(f"{API}/collections/{uuid4()}", json={"name": "x"}, headers=owner.headers), 404
    )


def test_collection_bad_input_changes_nothing(client: Any, services: Any) -> None:
    owner = make_user(services)
    collection = create_collection(client, owner)
    url = f"{API}/collections/{collection['id']}"
    before = snapshot(services)
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("post", f"{API}/collections", {"json": {}}, 422),
        ("post", f"{API}/collections", {"json": {"name": ""}}, 422),
        ("post", f"{API}/collections", {"json": {"name": "   "}}, 422),
        ("post", f"{API}/collections", {"json": {"name": 12}}, 422),
        ("post", f"{API}/collections", {"json": {"name": "x" * 201}}, 422),
        ("post", f"{API}/collections", {"json": {"name": "ok", "description": "d" * 2001}}, 422),
        ("post", f"{API}/collections", {"json": {"name": "ok", "owner_id": str(owner.id)}}, 422),
        ("post", f"{API}/collections", {"json": ["name"]}, 422),
        (
            "post",
            f"{API}/collections",
            {"content": b'{"name": ', "headers": {"content-type": "application/json"}},
            422,
        ),
        ("post", f"{API}/collections", {"json": {"name": "x", "description": "y" * 300_000}}, 413),
        ("patch", url, {"json": {}}, 422),
        ("patch", url, {"json": {"name": None}}, 422),
        ("patch", url, {"json": {"name": ["x"]}}, 422),
        ("patch", f"{API}/collections/not-a-uuid", {"json": {"name": "x"}}, 422),
        ("get", f"{API}/collections?limit=0", {}, 422),
        ("get", f"{API}/collections?limit=201", {}, 422),
        ("get", f"{API}/collections?cursor=garbage", {}, 400),
        ("get", f"{API}/collections?cursor=1.{'z' * 32}", {}, 400),
    ]
    for method, path, kwargs, status in cases:
        headers = {**owner.headers, **kwargs.pop("headers", {})}
        assert_problem(client.request(method.upper(), path, headers=headers, **kwargs), status)
    assert snapshot(services) == before
