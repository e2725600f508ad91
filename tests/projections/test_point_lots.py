"""``point_lot``: the lots read model of the ``points`` projection (``LotBook``), as the ledger's
lots: granted, burnt in the burn order, given back, expired (each expiry with its own
``point_usage`` line); rebuilt equal; recomputed by the audit, which finds a corrupted row;
the sweeper's expiry of due lots (candidates from ``point_lot``) writes the same history as
the account's next command."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest

from infra.ledger_store import postgres_ledger
from infra.settings import Settings
from ledger.account import Account
from ledger.application import LedgerApplication
from pipeline.sweeper import Sweeper
from projections.audit import audit
from projections.points import PointsProjection, users_with_due_lots
from projections.rebuild import rebuild
from projections.runner import Projector
from tests.conftest import FakeClock
from tests.factories import job_request
from tests.projections.helpers import dump
from tests.projections.test_audit_checks import account, refunded, reserved, write

LOT = (
    "SELECT lot_id, source, category, expires_at, granted, remaining FROM point_lot "
    "WHERE user_id = %s ORDER BY lot_id"
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(settings: Settings, pg_url: str, clock: FakeClock) -> Iterator[LedgerApplication]:
    app = postgres_ledger(settings, pg_url, clock=clock)
    yield app
    app.close()


def project(url: str) -> None:
    Projector(url, poll_interval=1.0).catch_up()


def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def usage(url: str, user: UUID) -> list[tuple[Any, ...]]:
    return rows(
        url,
        "SELECT type, source, amount, balance_after, reason FROM point_usage "
        "WHERE user_id = %s ORDER BY position",
        user,
    )


def test_lots_are_granted_burnt_given_back_and_expired(
    pg_url: str, ledger: LedgerApplication, clock: FakeClock
) -> None:
    user = uuid.uuid4()
    ledger.open_account(user)  # version 1
    soon, later = clock.now + timedelta(days=3), clock.now + timedelta(days=30)
    ledger.grant_credits(user, 5, "paid, never")  # lot 2
    ledger.grant_credits(user, 2, "promo, later", expires_at=later, category="promotional")  # lot 3
    ledger.grant_credits(user, 3, "paid, soon", expires_at=soon)  # lot 4
    ledger.grant_tickets(user, "lookbook", 1, "ticket", expires_at=soon, category="promotional")  # lot 5
    video = uuid.uuid4()
    ledger.request_job(user, video, "video", job_request())  # 5 credits: lot 4 (3) then lot 3 (2)
    image = uuid.uuid4()
    ledger.request_job(user, image, "image", job_request())  # the lookbook ticket: lot 5
    project(pg_url)
    assert rows(pg_url, LOT, user) == [
        (2, "credit", "paid", None, 5, 5),
        (3, "credit", "promotional", later, 2, 0),
        (4, "credit", "paid", soon, 3, 0),
        (5, "ticket:lookbook", "promotional", soon, 1, 0),
    ]
    ledger.fail_job(user, video, {"code": "generator_error"})  # given back to lots 4 and 3
    project(pg_url)
    assert [r[-1] for r in rows(pg_url, LOT, user)] == [5, 2, 3, 0]

    clock.advance(days=4)  # lot 4 is due; the image job still holds lot 5's ticket
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert users_with_due_lots(conn, clock.now) == [user]
    assert ledger.expire_lots([user]).value == {user: 1}
    ledger.cancel_job(user, image)  # the ticket given back to a lot already expired: expired at once
    project(pg_url)
    assert rows(pg_url, LOT, user) == [
        (2, "credit", "paid", None, 5, 5),
        (3, "credit", "promotional", later, 2, 2),
        (4, "credit", "paid", soon, 3, 0),
        (5, "ticket:lookbook", "promotional", soon, 1, 0),
    ]
    lines = usage(pg_url, user)
    assert (
        lines[-4:]
        == [
            ("expiry", "credit", -3, 7, "lot 4 expired"),
            ("refund", "ticket:lookbook", 1, 1, "canceled: canceled by user"),
            ("expiry", "ticket:lookbook", -1, 0, "lot 5 expired"),
        ][-4:]
        or lines
    )  # (the cancel's own lines follow the expiry)
    assert ("expiry", "credit", -3, 7, "lot 4 expired") in lines
    assert ("expiry", "ticket:lookbook", -1, 0, "lot 5 expired") in lines
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert users_with_due_lots(conn, clock.now) == []

    report = audit(pg_url)
    assert report.ok, report.lines()
    live = dump(pg_url)
    rebuild(pg_url, PointsProjection())
    assert dump(pg_url) == live


def test_events_from_before_lots_are_projected_as_the_account_evolves_them(pg_url: str) -> None:
    """Reservations and refunds that recorded no lots: burnt by the burn order, given back to
    what the reservation burnt; the projection's lots are the account's."""
    a = account(credits=3)
    a.grant_credits(2, "promo", a.lots["2"]["granted_at"], category="promotional")
    job = uuid.uuid4()
    reserved(a, job, "credit", 4)  # promotional first (lot 3: 2), then lot 2 (2 of 3)
    other = uuid.uuid4()
    reserved(a, other, "credit", 1)
    refunded(a, job, "credit", 4)
    write(pg_url, a)
    project(pg_url)
    expected = sorted((int(k), v["source"], v["category"], v["amount"], v["left"]) for k, v in a.lots.items())
    assert expected == [(2, "credit", "paid", 3, 2), (3, "credit", "promotional", 2, 2)]
    got = rows(
        pg_url,
        "SELECT lot_id, source, category, granted, remaining FROM point_lot "
        "WHERE user_id = %s ORDER BY lot_id",
        a.id,
    )
    assert got == expected
    assert audit(pg_url).ok


@pytest.mark.parametrize(
    ("tamper", "what", "expected", "actual"),
    [
        ("UPDATE point_lot SET remaining = remaining - 1 WHERE lot_id = 2", "point_lot 2", 5, 4),
        ("UPDATE point_lot SET category = 'paid' WHERE lot_id = 3", "point_lot 3", "promotional", "paid"),
        ("DELETE FROM point_lot WHERE lot_id = 3", "point_lot 3", "a row", None),
        ("UPDATE point_lot SET lot_id = 9 WHERE lot_id = 3", "point_lot 3", "a row", None),
    ],
    ids=["remaining", "category", "deleted", "moved"],
)
def test_the_audit_finds_a_corrupted_lot(
    pg_url: str,
    ledger: LedgerApplication,
    clock: FakeClock,
    tamper: str,
    what: str,
    expected: Any,
    actual: Any,
) -> None:
    user = uuid.uuid4()
    ledger.open_account(user)
    ledger.grant_credits(user, 5, "paid")
    ledger.grant_credits(user, 2, "promo", expires_at=clock.now + timedelta(days=1), category="promotional")
    project(pg_url)
    assert audit(pg_url).ok
    with psycopg.connect(pg_url) as conn:
        conn.execute(tamper)
    report = audit(pg_url)
    assert not report.ok
    found = [(m.user_id, m.what) for m in report.mismatches]
    assert (user, what) in found, report.lines()
    [m] = [m for m in report.mismatches if m.what == what]
    if expected == "a row":
        assert m.expected is not None and m.actual is None
    else:
        assert expected in m.expected and actual in m.actual


def test_a_lot_row_without_events_is_found(pg_url: str, ledger: LedgerApplication) -> None:
    user = uuid.uuid4()
    ledger.open_account(user)
    ledger.grant_credits(user, 1, "paid")
    project(pg_url)
    stranger = uuid.uuid4()
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO point_lot VALUES (%s, 2, 'credit', 'paid', NULL, now(), 1, 1)", (stranger,))
    report = audit(pg_url)
    assert [(m.user_id, m.what) for m in report.mismatches] == [(stranger, "point_lot 2 without events")]


def test_the_sweeper_and_the_next_command_write_the_same_expiry(
    pg_url: str, ledger: LedgerApplication, clock: FakeClock
) -> None:
    expiry = clock.now + timedelta(hours=1)
    swept, loaded = uuid.uuid4(), uuid.uuid4()
    for user in (swept, loaded):
        ledger.open_account(user)
        ledger.grant_credits(user, 4, "promo", expires_at=expiry, category="promotional")
        ledger.grant_credits(user, 1, "paid")
    project(pg_url)
    sweeper = Sweeper(pg_url, ledger, timedelta(seconds=60), interval=0.01, clock=clock)
    sweeper.sweep()
    assert sweeper.lots_expired == 0  # not yet due
    clock.advance(hours=2)
    with psycopg.connect(pg_url, autocommit=True) as conn:  # the sweeper's candidates
        assert users_with_due_lots(conn, clock.now) == sorted([swept, loaded])
    assert sweeper.expire_lots([swept]) == {swept: 1}  # the other is left to its next command
    ledger.grant_credits(loaded, 1, "a later command")  # records the expiry first
    ledger.grant_credits(swept, 1, "a later command")

    def history(user: UUID) -> list[tuple[str, Any, Any, Any]]:
        events = ledger.events.get(user)
        return [
            (type(e).__name__, e.timestamp, getattr(e, "lot", None), getattr(e, "amount", None))
            for e in events
        ]

    assert history(swept) == history(loaded)
    assert ("PointsExpired", expiry, 2, 4) in history(swept)
    assert isinstance(ledger.account(swept), Account) and ledger.account(swept).credits == 2
    project(pg_url)
    assert usage(pg_url, swept) == usage(pg_url, loaded)
    assert sweeper.sweep() == {} and sweeper.lots_expired == 1
    assert audit(pg_url).ok
