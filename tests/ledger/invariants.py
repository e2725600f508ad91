"""The ledger invariants of docs/ledger.md, checked from an account's events (each event's
flows and job change are its effect, ``ledger.effects``)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any
from uuid import UUID

from ledger.account import Account
from ledger.effects import Charge, effect
from ledger.policy import CREDIT, SUBSCRIPTION, ticket_source
from ledger.status import ReservationStatus


def check_account_invariants(events: list[Any], account: Account) -> None:
    """Raise AssertionError when the account breaks an invariant."""
    flows: dict[str, int] = defaultdict(int)  # granted - reserved + refunded + adjusted
    reservations: dict[UUID, Charge] = {}
    reserved_count: Counter[UUID] = Counter()
    refunds: Counter[UUID] = Counter()
    settled: Counter[UUID] = Counter()
    for event in events:
        fx = effect(event)
        for movement in fx.movements:
            flows[movement.source] += movement.delta
        change = fx.job
        if change is None:
            continue
        if change.reserved is not None:
            reserved_count[change.job_id] += 1
            reservations[change.job_id] = change.reserved
        if change.refunded is not None:
            refunds[change.job_id] += 1
            reserved = reservations[change.job_id]
            assert change.refunded == reserved, (
                f"job {change.job_id} refunded {change.refunded}, reserved {reserved}"
            )
        if change.status is ReservationStatus.SUCCEEDED:
            settled[change.job_id] += 1
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
