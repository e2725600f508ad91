"""infra/erasure.py: a deleted account's uploads and outputs are erased from storage once
``VTO_DELETED_ACCOUNT_RETENTION_DAYS`` have passed, by the sweeper; what others hold stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from infra.erasure import Erasure
from pipeline.sweeper import Sweeper
from tests.api_factories import make_user
from tests.catalog_factories import create_project, share, stored_files, upload_asset, upload_product

DELETED_AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def mark_deleted(services: Any, user_id: Any, when: datetime = DELETED_AT) -> None:
    with services.sessions() as session:
        session.execute(text("UPDATE users SET deleted_at = :t WHERE id = :u"), {"t": when, "u": user_id})
        session.commit()


def count(services: Any, sql: str, **params: Any) -> int:
    with services.sessions() as session:
        return int(session.execute(text(sql), params).scalar() or 0)


def test_a_deleted_accounts_uploads_and_outputs_are_erased_after_the_retention(
    client: Any, services: Any
) -> None:
    gone, editor, bystander = make_user(services), make_user(services), make_user(services)
    project = create_project(client, gone)
    share(client, gone, project["id"], editor, role="editor")
    upload_product(client, gone, project["id"])
    upload_product(client, editor, project["id"])  # the project's, so the owner's
    upload_asset(client, gone)
    kept_asset = upload_asset(client, editor)
    own = create_project(client, bystander)
    upload_product(client, bystander, own["id"])
    services.storage.put(f"outputs/{gone.id}/job-1/0.png", b"output", "image/png")
    services.storage.put(f"outputs/{editor.id}/job-2/0.png", b"output", "image/png")
    mark_deleted(services, gone.id)
    files_before = stored_files(services)

    retention = timedelta(days=services.settings.deleted_account_retention_days)
    erasure = Erasure(
        services.url,
        services.storage,
        services.settings,
        clock=lambda: DELETED_AT + retention,
        account_scan_interval_s=0,
    )
    early = erasure.run()
    assert (early.objects, early.accounts) == (0, 0)
    assert stored_files(services) == files_before

    later = Erasure(
        services.url,
        services.storage,
        services.settings,
        clock=lambda: DELETED_AT + retention + timedelta(seconds=1),
        account_scan_interval_s=0,
    )
    report = later.run()
    assert report.accounts == 1
    left = stored_files(services)
    assert not [f for f in left if str(gone.id) in f], left
    assert f"outputs/{editor.id}/job-2/0.png" in left
    assert any(kept_asset["id"] in f for f in left)
    assert (
        len([f for f in left if f.startswith("products/") and not f.endswith(".type")]) == 1
    )  # the bystander's
    assert count(services, "SELECT count(*) FROM projects WHERE owner_id = :u", u=gone.id) == 0
    assert count(services, "SELECT count(*) FROM collections WHERE owner_id = :u", u=gone.id) == 0
    assert count(services, "SELECT count(*) FROM assets WHERE owner_id = :u", u=gone.id) == 0
    assert count(services, "SELECT count(*) FROM assets WHERE owner_id = :u", u=editor.id) == 1
    assert count(services, "SELECT count(*) FROM erased_accounts WHERE user_id = :u", u=gone.id) == 1
    # Done once: the next pass finds nothing.
    assert (later.run().accounts, stored_files(services)) == (0, left)


def test_the_sweeper_erases_on_each_pass(client: Any, services: Any) -> None:
    gone = make_user(services)
    asset = upload_asset(client, gone)
    mark_deleted(services, gone.id, DELETED_AT)
    now = DELETED_AT + timedelta(days=services.settings.deleted_account_retention_days, seconds=1)
    erasure = Erasure(services.url, services.storage, services.settings, clock=lambda: now)
    sweeper = Sweeper(
        services.url, services.ledger, timedelta(minutes=15), 60, clock=lambda: now, erasure=erasure
    )
    sweeper.sweep()
    assert not [f for f in stored_files(services) if asset["id"] in f]
    assert count(services, "SELECT count(*) FROM erased_accounts WHERE user_id = :u", u=gone.id) == 1


def test_retention_zero_erases_at_the_next_pass(client: Any, services: Any) -> None:
    gone = make_user(services)
    upload_asset(client, gone)
    mark_deleted(services, gone.id, DELETED_AT)
    settings = services.settings.model_copy(update={"deleted_account_retention_days": 0})
    now = DELETED_AT + timedelta(seconds=1)
    assert Erasure(services.url, services.storage, settings, clock=lambda: now).run().accounts == 1
