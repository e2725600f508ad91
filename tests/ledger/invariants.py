"""The ledger invariants of the design (docs), checked from an account's events.

The expected balances and reservations are computed here from the events' own fields (a
grant's ``amount``, a reservation's ``source`` and ``amount``, a refund's, an adjustment's
``delta``), written out by hand: not through ``ledger.effects``, the module the account itself
evolves by, so that a wrong effect cannot make the account and its check agree."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any
from uuid import UUID

from ledger.account import Account

SUBSCRIPTION, CREDIT = "subscription", "credit"


def check_account_invariants(events: list[Any], account: Account) -> None:
    """Raise AssertionError when the account breaks an invariant."""
    balances: dict[str, int] = defaultdict(int)  # granted - reserved + refunded + adjusted
    reserved: dict[UUID, tuple[str, int]] = {}
    reserved_count: Counter[UUID] = Counter()
    refunds: Counter[UUID] = Counter()
    completed: Counter[UUID] = Counter()
    for event in events:
        if isinstance(event, Account.CreditsGranted):
            balances[CREDIT] += event.amount
        elif isinstance(event, Account.TicketsGranted):
            balances[f"ticket:{event.ticket_type}"] += event.count
        elif isinstance(event, Account.EntitlementReserved):
            reserved_count[event.job_id] += 1
            reserved[event.job_id] = (event.source, event.amount)
            balances[event.source] -= event.amount
            assert event.source != SUBSCRIPTION or event.amount == 0, event
        elif isinstance(event, Account.Refunded):
            refunds[event.job_id] += 1
            assert (event.source, event.amount) == reserved[event.job_id], (
                f"job {event.job_id} refunded {event.amount} of {event.source}, "
                f"reserved {reserved[event.job_id]}"
            )
            balances[event.source] += event.amount
        elif isinstance(event, Account.Adjusted):
            balances[event.source] += event.delta
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
