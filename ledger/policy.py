"""Pricing data: which ticket pays for which job kind, and what a job costs in credits.

This is configuration, not code: a new ticket type is a new entry in ``ticket_kinds``
(setting ``VTO_TICKET_KINDS``), a new job kind a new entry in ``credit_costs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ledger.errors import UnknownJobKind, UnknownTicketType

SUBSCRIPTION = "subscription"
CREDIT = "credit"
TICKET_PREFIX = "ticket:"

DEFAULT_TICKET_KINDS: Mapping[str, str] = {"lookbook": "image", "video": "video"}
DEFAULT_CREDIT_COSTS: Mapping[str, int] = {"image": 1, "video": 5}


def ticket_source(ticket_type: str) -> str:
    """The source name of a ticket type, e.g. ``ticket:lookbook``."""
    return f"{TICKET_PREFIX}{ticket_type}"


def ticket_type_of(source: str) -> str | None:
    """The ticket type of a source name, or None when the source is not a ticket."""
    return source[len(TICKET_PREFIX) :] if source.startswith(TICKET_PREFIX) else None


@dataclass(frozen=True)
class PricingPolicy:
    """Ticket types (in deduction priority order) with the job kind each pays for, and the
    credit cost of each job kind."""

    ticket_kinds: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TICKET_KINDS))
    credit_costs: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_CREDIT_COSTS))

    def __post_init__(self) -> None:
        for kind, cost in self.credit_costs.items():
            if not kind or not isinstance(cost, int) or isinstance(cost, bool) or cost <= 0:
                raise ValueError(f"credit cost of {kind!r} must be a positive integer")
        for ticket_type, kind in self.ticket_kinds.items():
            if not ticket_type or ":" in ticket_type:
                raise ValueError(f"invalid ticket type {ticket_type!r}")
            if kind not in self.credit_costs:
                raise ValueError(f"ticket type {ticket_type!r} covers unknown job kind {kind!r}")

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.credit_costs)

    def check_kind(self, kind: str) -> None:
        if kind not in self.credit_costs:
            raise UnknownJobKind(kind, self.kinds)

    def check_ticket_type(self, ticket_type: str) -> None:
        if ticket_type not in self.ticket_kinds:
            raise UnknownTicketType(ticket_type, tuple(self.ticket_kinds))

    def cost(self, kind: str) -> int:
        self.check_kind(kind)
        return self.credit_costs[kind]

    def tickets_for(self, kind: str) -> tuple[str, ...]:
        """Ticket types that pay for a job of this kind, in priority order."""
        return tuple(t for t, k in self.ticket_kinds.items() if k == kind)

    def sources(self) -> tuple[str, ...]:
        """Every source name, in deduction priority order."""
        return (SUBSCRIPTION, *(ticket_source(t) for t in self.ticket_kinds), CREDIT)
