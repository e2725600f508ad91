"""The point ledger: per-user event-sourced accounts (pure domain, no web/ORM/Kafka code)."""

from ledger.account import Account, Reservation
from ledger.application import CommandResult, LedgerApplication, LedgerOptions
from ledger.policy import CREDIT, SUBSCRIPTION, PricingPolicy, ticket_source

__all__ = [
    "CREDIT",
    "SUBSCRIPTION",
    "Account",
    "CommandResult",
    "LedgerApplication",
    "LedgerOptions",
    "PricingPolicy",
    "Reservation",
    "ticket_source",
]
