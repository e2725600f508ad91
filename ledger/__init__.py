"""The point ledger: per-user event-sourced accounts (pure domain, no web/ORM/Kafka code).

The bottom layer: imports nothing of ours (only the standard library, ``eventsourcing`` and
``tenacity``); every other package may import it. ``effects`` says once what each event
does; ``status`` names job statuses once."""

from ledger.account import Account, Reservation
from ledger.application import CommandResult, LedgerApplication, LedgerOptions
from ledger.policy import CREDIT, SUBSCRIPTION, PricingPolicy, ticket_source
from ledger.status import JobStatus, ReservationStatus

__all__ = [
    "CREDIT",
    "SUBSCRIPTION",
    "Account",
    "CommandResult",
    "JobStatus",
    "LedgerApplication",
    "LedgerOptions",
    "PricingPolicy",
    "Reservation",
    "ReservationStatus",
    "ticket_source",
]
