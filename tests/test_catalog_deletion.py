"""DELETE of assets, products, projects and collections (owner only): rows go at once, their
stored objects once no job ordered before the deletion can still need them; jobs keep their
outputs, and a job queued when its inputs were deleted still ends generated (or, if its inputs
were already erased, refunded)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from generator_worker.embedded import start_pipeline
from infra.erasure import Erasure, erasure_delay
from tests.api_factories import make_user
from tests.catalog_factories import (
    API,
    assert_problem,
    create_collection,
    create_project,
    invite,
    share,
    snapshot,
    upload_asset,
    upload_product,
)
from tests.test_vto import catalog, job_body, wait_terminal


def scheduled(services: Any) -> dict[str, Any]:
    """The stored objects waiting for erasure: key -> when."""
    with services.sessions() as session:
        rows = session.execute(text("SELECT key, erase_after FROM storage_erasures")).all()
    return {key: when for key, when in rows}


def key_of(services: Any, table: str, row_id: str) -> str:
    with services.sessions() as session:
        key = session.execute(text(f"SELECT storage_key FROM {table} WHERE id = :i"), {"i": row_id}).scalar()
    assert isinstance(key, str)
    return key


def test_only_owners_delete_and_the_rows_go_at_once(client: Any, services: Any) -> None:
    owner, editor, viewer, stranger = (make_user(services) for _ in range(4))
    collection = create_collection(client, owner)
    project = create_project(client, owner, collection["id"])
    pid = project["id"]
    share(client, owner, pid, editor, role="editor")
    share(client, owner, pid, viewer)
    invite(client, owner, pid, "someone@example.com")
    product = upload_product(client, editor, pid)
    asset = upload_asset(client, owner)
    product_key, asset_key = (
        key_of(services, "products", product["id"]),
        key_of(services, "assets", asset["id"]),
    )

    # Strangers get 404 and shared users 403 (as for every change); nothing changes.
    before = snapshot(services)
    for caller, path, status in [
        (stranger, f"/assets/{asset['id']}", 404),
        (editor, f"/assets/{asset['id']}", 404),
        (stranger, f"/projects/{pid}/products/{product['id']}", 404),
        (viewer, f"/projects/{pid}/products/{product['id']}", 403),
        (editor, f"/projects/{pid}/products/{product['id']}", 403),
        (stranger, f"/projects/{pid}", 404),
        (viewer, f"/projects/{pid}", 403),
        (editor, f"/projects/{pid}", 403),
        (stranger, f"/collections/{collection['id']}", 404),
        (editor, f"/collections/{collection['id']}", 404),
    ]:
        assert_problem(client.delete(API + path, headers=caller.headers), status)
    assert snapshot(services) == before

    deleted = client.delete(f"{API}/assets/{asset['id']}", headers=owner.headers)
    assert deleted.status_code == 204 and deleted.content == b""
    assert_problem(client.get(f"{API}/assets/{asset['id']}", headers=owner.headers), 404)
    assert_problem(client.delete(f"{API}/assets/{asset['id']}", headers=owner.headers), 404)
    assert (
        client.delete(f"{API}/projects/{pid}/products/{product['id']}", headers=owner.headers).status_code
        == 204
    )
    assert client.get(f"{API}/projects/{pid}/products", headers=editor.headers).json()["items"] == []
    # The objects stay until no job ordered before the deletion can need them.
    due = scheduled(services)
    assert set(due) == {asset_key, product_key}
    assert services.storage.exists(asset_key) and services.storage.exists(product_key)

    second = upload_product(client, owner, pid)
    assert client.delete(f"{API}/projects/{pid}", headers=owner.headers).status_code == 204
    for caller in (owner, editor, viewer):
        assert_problem(client.get(f"{API}/projects/{pid}", headers=caller.headers), 404)
        assert client.get(f"{API}/projects", headers=caller.headers).json()["items"] == []
    assert key_of_deleted(services, second["id"]) in scheduled(services)
    with services.sessions() as session:
        for table in ("project_shares", "project_invitations", "products"):
            left = session.execute(text(f"SELECT count(*) FROM {table} WHERE project_id = :p"), {"p": pid})
            assert left.scalar() == 0, table

    # A collection goes with its projects.
    kept = create_project(client, owner, collection["id"], name="Kept until the collection goes")
    third = upload_product(client, owner, kept["id"])
    other = create_collection(client, owner, "Other")
    assert client.delete(f"{API}/collections/{collection['id']}", headers=owner.headers).status_code == 204
    assert_problem(client.get(f"{API}/projects/{kept['id']}", headers=owner.headers), 404)
    assert [c["id"] for c in client.get(f"{API}/collections", headers=owner.headers).json()["items"]] == [
        other["id"]
    ]
    assert key_of_deleted(services, third["id"]) in scheduled(services)
    delay = erasure_delay(services.settings)
    assert delay >= timedelta(seconds=services.settings.job_timeout_s)


def key_of_deleted(services: Any, product_id: str) -> str:
    """A deleted product's key (its row is gone): the one scheduled under its id."""
    (key,) = [k for k in scheduled(services) if product_id in k]
    return key


def test_a_job_queued_when_its_inputs_are_deleted_still_generates_and_keeps_its_outputs(
    client: Any, services: Any
) -> None:
    owner = make_user(services)
    services.ledger.grant(owner.id, "test", credits=5)
    items = catalog(client, owner)
    job = client.post(f"{API}/vto/jobs", json=job_body(items), headers=owner.headers)
    assert job.status_code == 202, job.text
    assert client.delete(f"{API}/assets/{items['model_asset_id']}", headers=owner.headers).status_code == 204
    assert client.delete(f"{API}/projects/{items['project_id']}", headers=owner.headers).status_code == 204

    pipeline = start_pipeline(services.settings, services.url, services.ledger, services.storage)
    try:
        done = wait_terminal(client, owner, job.json()["id"])
    finally:
        pipeline.stop()
    assert done["status"] == "succeeded", done
    output = done["outputs"][0]["url"]
    assert client.get(output).status_code == 200

    # Once the delay has passed, the sweeper's erasure removes the inputs, not the outputs.
    later = Erasure(services.url, services.storage, services.settings, clock=lambda: utc_after(services))
    assert later.run().objects == 2
    assert scheduled(services) == {}
    assert client.get(output).status_code == 200
    again = client.get(f"{API}/vto/jobs/{done['id']}", headers=owner.headers).json()
    assert client.get(again["outputs"][0]["url"]).status_code == 200


def test_a_job_whose_inputs_were_erased_before_it_ran_is_refunded(client: Any, services: Any) -> None:
    owner = make_user(services)
    services.ledger.grant(owner.id, "test", credits=5)
    items = catalog(client, owner)
    job = client.post(f"{API}/vto/jobs", json=job_body(items), headers=owner.headers).json()
    assert client.get(f"{API}/points", headers=owner.headers).json()["credit"] == 4
    assert client.delete(f"{API}/assets/{items['model_asset_id']}", headers=owner.headers).status_code == 204
    Erasure(services.url, services.storage, services.settings, clock=lambda: utc_after(services)).run()

    pipeline = start_pipeline(services.settings, services.url, services.ledger, services.storage)
    try:
        done = wait_terminal(client, owner, job["id"])
    finally:
        pipeline.stop()
    assert done["status"] == "failed" and done["refund"] is not None, done
    assert client.get(f"{API}/points", headers=owner.headers).json()["credit"] == 5


def utc_after(services: Any) -> Any:
    """A time past every erasure scheduled now."""
    return datetime.now(UTC) + erasure_delay(services.settings) + timedelta(seconds=1)
