"""Balances as lots: the burn order, expiry as an event (the same history whoever records it),
reservations across an expiry, and streams written before lots existed. Expected values are
written by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from infra.ledger_store import memory_ledger
from infra.settings import Settings
from ledger.account import Account
from ledger.application import LedgerApplication, event_mapper
from ledger.errors import InsufficientEntitlement, InvalidAmount
from tests.conftest import FakeClock
from tests.factories import job_request, ledger_events
from tests.ledger.invariants import check_account_invariants

FIXTURE = Path(__file__).parent / "fixtures" / "stream_2026_12.json"


def expiries(ledger: LedgerApplication, user: UUID) -> list[tuple[int, int, datetime]]:
    return [
        (e.lot, e.amount, e.timestamp)
        for e in ledger_events(ledger, user)
        if isinstance(e, Account.PointsExpired)
    ]


def test_a_charge_burns_the_earliest_expiry_then_promotional_then_the_oldest(
    ledger: LedgerApplication, clock: FakeClock
) -> None:
    user, now = uuid4(), clock.now
    ledger.open_account(user)  # version 1
    ledger.grant_credits(user, 1, "paid, never")  # lot 2
    ledger.grant_credits(user, 1, "promotional, never", category="promotional")  # lot 3
    ledger.grant_credits(user, 1, "paid, in 2 days", now + timedelta(days=2))  # lot 4
    ledger.grant_credits(user, 1, "promotional, in 2 days", now + timedelta(days=2), "promotional")  # 5
    ledger.grant_credits(user, 1, "paid, tomorrow", now + timedelta(days=1))  # lot 6
    ledger.grant_credits(user, 1, "paid, never, newer")  # lot 7
    burnt = []
    for _ in range(6):
        ledger.request_job(user, uuid4(), "image", job_request())
        reserved = [e for e in ledger_events(ledger, user) if isinstance(e, Account.EntitlementReserved)]
        burnt.append(reserved[-1].lots)
    assert burnt == [[{"lot": lot, "amount": 1}] for lot in (6, 5, 4, 3, 2, 7)]
    assert ledger.account(user).credits == 0


def test_a_lot_expires_with_what_it_has_left_whoever_records_it(
    ledger: LedgerApplication, clock: FakeClock
) -> None:
    """Recorded by the sweeper's command, or by the account's next command: the same event,
    dated at the expiry."""
    expires = clock.now + timedelta(days=1)
    users = [uuid4(), uuid4()]
    for user in users:
        ledger.open_account(user)
        ledger.grant_credits(user, 5, "trial", expires, "promotional")  # lot 2
        ledger.grant_credits(user, 3, "bought")  # lot 3
        ledger.request_job(user, uuid4(), "video", job_request())  # 5 credits: all of lot 2
    ledger.grant_credits(users[0], 2, "more trial", expires, "promotional")  # lot 6: 2 to expire
    ledger.grant_credits(users[1], 2, "more trial", expires, "promotional")
    clock.advance(days=2)
    assert ledger.expire_lots([users[0]]).value == {users[0]: 1}  # the sweeper
    assert ledger.expire_lots([users[0]]).value == {}  # nothing more to expire
    for user in users:
        ledger.grant_credits(user, 1, "later")  # the next command
    assert expiries(ledger, users[0]) == expiries(ledger, users[1]) == [(6, 2, expires)]
    for user in users:
        account = ledger.account(user)
        assert account.credits == 3 + 1
        assert {lot: v["left"] for lot, v in account.lots.items() if v["left"]} == {"3": 3, "8": 1}
        check_account_invariants(ledger_events(ledger, user), account)


def test_a_reservation_keeps_its_points_across_the_expiry_and_a_refund_after_it_expires_them(
    ledger: LedgerApplication, clock: FakeClock
) -> None:
    user = uuid4()
    ledger.open_account(user)
    expires = clock.now + timedelta(hours=1)
    ledger.grant_credits(user, 6, "trial", expires, "promotional")  # lot 2
    kept, refunded = uuid4(), uuid4()
    ledger.request_job(user, kept, "image", job_request())  # 1 of lot 2
    ledger.request_job(user, refunded, "video", job_request())  # 5 of lot 2: nothing left
    clock.advance(hours=2)
    ledger.complete_job(user, kept, [])  # settled after the expiry: the charge stays
    ledger.fail_job(user, refunded, {"code": "boom"})  # given back, and expired at once
    events = ledger_events(ledger, user)
    refund = [e for e in events if isinstance(e, Account.Refunded)]
    assert [(e.amount, e.lots) for e in refund] == [(5, [{"lot": 2, "amount": 5}])]
    assert expiries(ledger, user) == [(2, 5, clock.now)]  # both lines recorded
    assert events.index(refund[0]) < len(events) - 1 and isinstance(events[-1], Account.PointsExpired)
    account = ledger.account(user)
    assert account.credits == 0
    check_account_invariants(events, account)


def test_points_whose_expiry_has_come_do_not_pay_even_before_it_is_recorded(
    ledger: LedgerApplication, clock: FakeClock
) -> None:
    user = uuid4()
    ledger.open_account(user)
    ledger.grant_credits(user, 5, "trial", clock.now + timedelta(hours=1), "promotional")
    ledger.grant_tickets(user, "lookbook", 1, "trial", clock.now + timedelta(hours=1))
    clock.advance(hours=2)  # both expired; nothing recorded yet
    events = len(ledger_events(ledger, user))
    with pytest.raises(InsufficientEntitlement):
        ledger.request_job(user, uuid4(), "image", job_request())
    assert len(ledger_events(ledger, user)) == events  # refused: nothing appended
    assert ledger.account(user).usable("credit", clock.now) == 0
    ledger.expire_lots([user])
    assert (ledger.account(user).credits, ledger.account(user).tickets) == (0, {"lookbook": 0})


@pytest.mark.parametrize(
    ("expires_in", "category"),
    [(timedelta(0), "paid"), (timedelta(hours=-1), "paid"), (timedelta(days=1), "gift")],
)
def test_a_grant_that_expires_at_once_or_of_no_known_category_is_refused(
    ledger: LedgerApplication, clock: FakeClock, expires_in: timedelta, category: str
) -> None:
    user = uuid4()
    ledger.open_account(user)
    with pytest.raises(InvalidAmount):
        ledger.grant_credits(user, 5, "bad", clock.now + expires_in, category)
    with pytest.raises(InvalidAmount):
        ledger.grant_credits(user, 5, "naive", datetime(2030, 1, 1))
    assert len(ledger_events(ledger, user)) == 1  # only the opening


def replay_fixture() -> tuple[Account, list[object], dict[str, object]]:
    data = json.loads(FIXTURE.read_text())
    user = UUID(data["user"])
    mapper = event_mapper()
    events = [
        mapper.to_domain_event(StoredEvent(user, row["version"], row["topic"], row["state"].encode()))
        for row in data["events"]
    ]
    account = None
    for event in events:
        account = event.mutate(account)  # type: ignore[attr-defined]
    assert isinstance(account, Account)
    return account, events, data["balances"]


def test_a_stream_written_before_lots_loads_unchanged() -> None:
    """Events stored by the code before lots (tests/ledger/fixtures, written on 2026-12-06):
    the grants become paid lots that never expire, what the jobs burnt is found by the burn
    order, and the balances are the ones that code computed."""
    account, events, balances = replay_fixture()
    assert (account.credits, account.tickets) == (balances["credit"], balances["tickets"])
    by_source: dict[str, int] = {}
    for lot in account.lots.values():
        assert (lot["category"], lot["expires_at"]) == ("paid", None)
        by_source[lot["source"]] = by_source.get(lot["source"], 0) + lot["left"]
    assert by_source.get("credit", 0) == account.credits
    for ticket_type, count in account.tickets.items():
        assert by_source.get(f"ticket:{ticket_type}", 0) == count
    check_account_invariants(events, account)


def test_a_stream_written_before_lots_goes_on_with_lots(clock: FakeClock) -> None:
    """The same account, loaded by today's code, charged and refunded again."""
    data = json.loads(FIXTURE.read_text())
    user = UUID(data["user"])
    clock.now = datetime(2026, 12, 5, tzinfo=UTC)
    ledger = memory_ledger(Settings(_env_file=None), clock=clock)  # type: ignore[call-arg]
    ledger.recorder.insert_events(
        [StoredEvent(user, row["version"], row["topic"], row["state"].encode()) for row in data["events"]]
    )
    before = ledger.account(user)
    assert before.tickets["video"] == 1
    ledger.request_job(user, uuid4(), "video", job_request())  # the old video ticket
    job = uuid4()
    ledger.grant_credits(user, 4, "new", clock.now + timedelta(days=1), "promotional")
    ledger.request_job(user, job, "video", job_request())  # 4 promotional (expiring) + 1 old paid
    reserved = [e for e in ledger_events(ledger, user) if isinstance(e, Account.EntitlementReserved)][-1]
    assert reserved.lots is not None and reserved.lots[0]["amount"] == 4 and len(reserved.lots) == 2
    ledger.cancel_job(user, job)
    assert ledger.account(user).credits == before.credits + 4
    check_account_invariants(ledger_events(ledger, user), ledger.account(user))
