"""The ledger invariants of DESIGN.md section 2, checked from an account's events."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any
from uuid import UUID

from ledger.account import Account
from ledger.policy import CREDIT, SUBSCRIPTION, ticket_source


def check_account_invariants(events: list[Any], account: Account) -> None:
    """Raise AssertionError when the account breaks an invariant."""
    flows: dict[str, int] = defaultdict(int)  # granted - reserved + refunded + adjusted
    reservations: dict[UUID, Any] = {}
    reserved_count: Counter[UUID] = Counter()
    refunds: Counter[UUID] = Counter()
    settled: Counter[UUID] = Counter()
    for event in events:
        if isinstance(event, Account.CreditsGranted):
            flows[CREDIT] += event.amount
        elif isinstance(event, Account.TicketsGranted):
            flows[ticket_source(event.ticket_type)] += event.count
        elif isinstance(event, Account.EntitlementReserved):
            reserved_count[event.job_id] += 1
            reservations[event.job_id] = event
            flows[event.source] -= event.amount
        elif isinstance(event, Account.Refunded):
            refunds[event.job_id] += 1
            reserved = reservations[event.job_id]
            assert (event.source, event.amount) == (reserved.source, reserved.amount), (
                f"job {event.job_id} refunded to {event.source}/{event.amount}, "
                f"reserved from {reserved.source}/{reserved.amount}"
            )
            flows[event.source] += event.amount
        elif isinstance(event, Account.JobCompleted):
            settled[event.job_id] += 1
        elif isinstance(event, Account.Adjusted):
            flows[event.source] += event.delta
    assert all(n == 1 for n in reserved_count.values()), f"job reserved twice: {reserved_count}"
    assert all(n == 1 for n in refunds.values()), f"job refunded twice: {refunds}"
    assert all(n == 1 for n in settled.values()), f"job completed twice: {settled}"
    assert account.credits >= 0, f"credits below zero: {account.credits}"
    assert all(n >= 0 for n in account.tickets.values()), f"tickets below zero: {account.tickets}"
    assert flows.get(CREDIT, 0) == account.credits, (flows, account.credits)
    for ticket_type, balance in account.tickets.items():
        assert flows.get(ticket_source(ticket_type), 0) == balance, (ticket_type, flows, balance)
    assert flows.get(SUBSCRIPTION, 0) == 0
    for job_id, job in account.jobs.items():
        assert job["refunded"] == (refunds[UUID(job_id)] == 1)
