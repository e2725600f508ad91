"""Snapshots keep loading an account O(1) in the length of its history."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID, uuid4

import psycopg

from infra.ledger_store import postgres_ledger
from infra.settings import Settings
from ledger.account import Account
from ledger.application import LedgerApplication
from tests.conftest import FakeClock
from tests.factories import job_request, new_user


def grow(ledger: LedgerApplication, user: UUID, events: int, batch: int = 500) -> None:
    """Append subscription changes (events that add nothing for the account to hold) through
    the ledger's store until the account has ``events`` events, ``batch`` events an append."""

    def renewals(account: Account, now: datetime) -> None:
        for _ in range(min(batch, events - account.version)):
            account.activate_subscription("pro", now + timedelta(days=30), None, "grow", now)

    while ledger.account(user).version < events:
        ledger.store.execute(user, renewals, create=False)


def test_loading_ten_thousand_events_uses_the_snapshot(
    pg_ledger: LedgerApplication, pg_url: str, clock: FakeClock
) -> None:
    user = new_user(pg_ledger)
    grow(pg_ledger, user, 10_000)
    assert pg_ledger.snapshots is not None
    latest = list(pg_ledger.snapshots.get(user, desc=True, limit=1))
    assert latest and latest[0].originator_version == 10_000
    # Remove the history the snapshot covers: only a load from the snapshot can still work.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        deleted = conn.execute(
            "DELETE FROM ledger_events WHERE originator_id = %s AND originator_version <= 9990", (user,)
        ).rowcount
    assert deleted == 9990
    fresh = postgres_ledger(Settings(), pg_url)  # a new process: nothing cached
    try:
        account = fresh.account(user)
        assert (account.version, account.subscription is not None) == (10_000, True)
        fresh.grant_credits(user, 1, "after")
        assert fresh.account(user).credits == 1
    finally:
        fresh.close()


def test_snapshot_interval_is_honoured(ledger: LedgerApplication, clock: FakeClock) -> None:
    interval = ledger.options.snapshot_interval
    user = new_user(ledger)
    grow(ledger, user, 2 * interval + interval // 2, batch=interval)  # versions 2 to 1 + interval, ...
    assert ledger.snapshots is not None
    versions = [s.originator_version for s in ledger.snapshots.get(user)]
    # Taken at the end of each save whose events reach a multiple of the interval.
    assert versions == [interval + 1, 2 * interval + 1]
    assert isinstance(ledger.account(user), Account)


def test_an_account_holding_more_than_the_interval_is_snapshotted_less_often(pg_url: str) -> None:
    """A snapshot costs what the account holds: with more open reservations than the interval,
    the fast store snapshots every power of two times the interval that covers them."""
    settings = Settings(_env_file=None, snapshot_interval=10)  # type: ignore[call-arg]
    ledger = postgres_ledger(settings, pg_url)
    user = new_user(ledger, credits=1_000)  # versions 1 (opened) and 2 (granted)
    for _ in range(100):  # two events a job (reserved, requested): versions 3 to 202
        ledger.request_job(user, uuid4(), "image", job_request())
    assert ledger.snapshots is not None
    versions = [s.originator_version for s in ledger.snapshots.get(user)]
    # Up to 10 open jobs, every 10 events; then 20 (at 40 the account holds 19 jobs), 40, 80.
    assert versions == [10, 20, 40, 80, 160]
    ledger.close()
    fresh = postgres_ledger(settings, pg_url)  # a new process: nothing in memory
    try:
        account = fresh.account(user)  # loaded from the snapshot at 160 and 42 events
        assert (account.version, len(account.jobs), account.entries) == (202, 100, 101)  # and one lot
    finally:
        fresh.close()
