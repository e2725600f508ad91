"""The ledger invariants of docs/ledger.md, checked from an account's events.

The expected balances, lots and reservations are computed here from the events' own fields (a
grant's ``amount``, a reservation's ``source``, ``amount`` and ``lots``, a refund's, an
adjustment's ``delta``, an expiry's), written out by hand: not through ``ledger.effects`` or
``ledger.lots``, the modules the account itself evolves by, so that a wrong effect or burn
order cannot make the account and its check agree."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.account import Account

SUBSCRIPTION, CREDIT = "subscription", "credit"


@dataclass
class Lot:
    source: str
    category: str
    expires_at: datetime | None
    left: int
    expired: int = 0


def burn_order(lot_id: int, lot: Lot) -> tuple[int, float, int, int]:
    """The documented order, by hand: earliest expiry first (never last), promotional before
    paid, oldest first."""
    never = lot.expires_at is None
    return (
        1 if never else 0,
        0.0 if never else lot.expires_at.timestamp(),
        0 if lot.category == "promotional" else 1,
        lot_id,
    )  # type: ignore[union-attr]


def check_burn(lots: dict[int, Lot], source: str, burnt: list[dict[str, int]], at: datetime) -> None:
    """``burnt`` takes the usable lots of ``source`` in the burn order, each to its end but the
    last: no lot burnt after its expiry, none skipped."""
    usable = sorted(
        (
            (lot_id, lot)
            for lot_id, lot in lots.items()
            if lot.source == source and lot.left > 0 and (lot.expires_at is None or lot.expires_at > at)
        ),
        key=lambda item: burn_order(*item),
    )
    expected_ids = [lot_id for lot_id, _ in usable][: len(burnt)]
    assert [d["lot"] for d in burnt] == expected_ids, (burnt, usable)
    for d, (_lot_id, lot) in zip(burnt[:-1], usable, strict=False):
        assert d["amount"] == lot.left, (burnt, usable)  # a lot before the last is burnt to its end


def check_account_invariants(events: list[Any], account: Account) -> None:
    """Raise AssertionError when the account breaks an invariant."""
    balances: dict[str, int] = defaultdict(int)  # granted - reserved + refunded + adjusted - expired
    lots: dict[int, Lot] = {}
    lots_known = True  # events from before lots were recorded say nothing of them
    reserved: dict[UUID, tuple[str, int]] = {}
    burnt_by: dict[UUID, list[dict[str, int]]] = {}
    reserved_count: Counter[UUID] = Counter()
    refunds: Counter[UUID] = Counter()
    completed: Counter[UUID] = Counter()

    def moved(records: list[dict[str, int]] | None, sign: int) -> None:
        nonlocal lots_known
        if records is None:
            lots_known = False
            return
        for r in records:
            lots[r["lot"]].left += sign * r["amount"]
            assert lots[r["lot"]].left >= 0, f"lot {r['lot']} below zero"

    for event in events:
        if isinstance(event, (Account.CreditsGranted, Account.TicketsGranted)):
            source = CREDIT if isinstance(event, Account.CreditsGranted) else f"ticket:{event.ticket_type}"
            amount = event.amount if isinstance(event, Account.CreditsGranted) else event.count
            balances[source] += amount
            lots[event.originator_version] = Lot(source, event.category, event.expires_at, amount)
            assert event.expires_at is None or event.expires_at > event.timestamp
        elif isinstance(event, Account.EntitlementReserved):
            reserved_count[event.job_id] += 1
            reserved[event.job_id] = (event.source, event.amount)
            balances[event.source] -= event.amount
            assert event.source != SUBSCRIPTION or event.amount == 0, event
            if event.lots is not None:
                assert sum(d["amount"] for d in event.lots) == event.amount, event
                if event.source != SUBSCRIPTION and lots_known:
                    check_burn(lots, event.source, event.lots, event.timestamp)
                burnt_by[event.job_id] = event.lots
            moved(event.lots, -1)
        elif isinstance(event, Account.Refunded):
            refunds[event.job_id] += 1
            assert (event.source, event.amount) == reserved[event.job_id], (
                f"job {event.job_id} refunded {event.amount} of {event.source}, "
                f"reserved {reserved[event.job_id]}"
            )
            if event.lots is not None and event.job_id in burnt_by:
                assert event.lots == burnt_by[event.job_id]  # given back to the lots it burnt
            balances[event.source] += event.amount
            moved(event.lots, 1)
        elif isinstance(event, Account.Adjusted):
            balances[event.source] += event.delta
            if event.delta > 0:
                lots[event.originator_version] = Lot(event.source, "paid", None, event.delta)
            else:
                moved(event.lots, -1)
        elif isinstance(event, Account.PointsExpired):
            balances[event.source] -= event.amount
            lot = lots.get(event.lot)
            if lot is not None:
                assert lot.expires_at is not None and lot.expires_at <= event.timestamp, (event, lot)
                lot.left -= event.amount
                lot.expired += event.amount
                assert lot.left >= 0
        elif isinstance(event, Account.JobCompleted):
            completed[event.job_id] += 1
    assert all(n == 1 for n in reserved_count.values()), f"job reserved twice: {reserved_count}"
    assert all(n == 1 for n in refunds.values()), f"job refunded twice: {refunds}"
    assert all(n == 1 for n in completed.values()), f"job completed twice: {completed}"
    assert account.credits >= 0, f"credits below zero: {account.credits}"
    assert all(n >= 0 for n in account.tickets.values()), f"tickets below zero: {account.tickets}"
    assert balances[CREDIT] == account.credits, (dict(balances), account.credits)
    tickets = {source[len("ticket:") :]: n for source, n in balances.items() if source.startswith("ticket:")}
    assert {t: n for t, n in tickets.items() if n} == {t: n for t, n in account.tickets.items() if n}, (
        tickets,
        account.tickets,
    )
    assert balances[SUBSCRIPTION] == 0
    for job_id, job in account.jobs.items():
        assert job["refunded"] == (refunds[UUID(job_id)] == 1)
        assert (job["source"], job["amount"]) == reserved[UUID(job_id)]
    if lots_known:
        # Every point granted is burnt by a job, given back, expired, or still held: what the
        # lots have left is the balance, lot by lot.
        held = {str(i): lot.left for i, lot in lots.items() if lot.left}
        assert {i: lot["left"] for i, lot in account.lots.items() if lot["left"]} == held, (
            account.lots,
            lots,
        )
        for source, balance in balances.items():
            if source != SUBSCRIPTION:
                assert sum(lot.left for lot in lots.values() if lot.source == source) == balance
