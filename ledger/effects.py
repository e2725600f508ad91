"""What each event of an ``Account`` does, written once.

``effect(event)`` says it as an ``Effect``: the points it moves on each source, what it does
to the subscription, the line it writes in the accounting ledger (``point_usage``), and the
job reservation it concerns. Everything that evolves from the events reads it from here: the
aggregate (``ledger.account``), the read models and the audit (``projections``) and the tests'
invariant checks. Amounts are integers (credits, tickets); a subscription has no balance, so
what it pays moves 0.

What each event means:

- ``CreditsGranted``, ``TicketsGranted``: +amount on ``credit`` / ``ticket:<type>`` (granted),
  as a new lot (``ledger.lots``) with the grant's category and expiry, whose id is the event's
  stream version;
- ``SubscriptionActivated``: the subscription from now on (a grant line of 0 points);
  ``SubscriptionCancelled``, ``SubscriptionExpired``: no subscription;
- ``EntitlementReserved``: -amount on the source it pays from (reserved), burnt from the lots
  it records; opens the job's reservation, counted against that day's subscription quota when
  the subscription pays;
- ``JobCompleted``: the job succeeded; a charged completion settles the reservation (a line of
  0 points on the reserved source);
- ``JobFailed`` (expired when the sweeper failed it), ``JobCanceled``: the job's new status;
- ``Refunded``: +amount back on the source (refunded), to the lots it records; the
  reservation's charge is given back, with its quota day use;
- ``Adjusted``: +/-delta on the source (adjusted): a positive one is a new paid lot that never
  expires, a negative one burns the lots it records;
- ``PointsExpired``: -amount on the source (expired): what one lot had left at its expiry, or
  what a refund gave back to a lot already expired; a line of its own;
- ``Opened``, ``JobRequested``: nothing.

Lots burnt or given back (``Effect.lot_moves``) are recorded by the events written since lots
exist. The events written before (a reservation, a refund or a negative adjustment without
``lots``) say ``None``: a reservation and a negative adjustment burnt by the burn order
(``ledger.lots.draw`` at the event's time), a refund gave back what its reservation burnt.

The rules of the daily quota count (``use_quota``, ``give_back_quota``) and of moving points on
a holder of balances (``move``, ``held``) are here too, for the same readers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from uuid import UUID

from ledger.errors import UnknownSource
from ledger.policy import CREDIT, SUBSCRIPTION, ticket_source, ticket_type_of
from ledger.status import ReservationStatus

if TYPE_CHECKING:
    from ledger.account import Account


class Flow(StrEnum):
    """The accounting category of a movement (the audit's totals per source)."""

    GRANTED = "granted"
    RESERVED = "reserved"
    REFUNDED = "refunded"
    ADJUSTED = "adjusted"
    EXPIRED = "expired"
    SETTLED = "settled"  # counts settled jobs, not points: a settlement moves nothing


class UsageType(StrEnum):
    """``point_usage.type``: the kind of an accounting line."""

    RESERVATION = "reservation"
    SETTLEMENT = "settlement"
    REFUND = "refund"
    GRANT = "grant"
    ADJUSTMENT = "adjustment"
    EXPIRY = "expiry"


@dataclass(frozen=True, slots=True)
class Movement:
    """Points moved on one source: ``delta`` is the signed change of its balance."""

    source: str
    delta: int
    flow: Flow

    @property
    def amount(self) -> int:
        """The movement as the accounting totals count it: a reservation counts positive."""
        return -self.delta if self.flow is Flow.RESERVED else self.delta


@dataclass(frozen=True, slots=True)
class Usage:
    """The accounting line of an event: ``amount`` is signed, as the line shows it.
    ``source`` None: the source the job was reserved from (a settlement)."""

    type: UsageType
    source: str | None
    amount: int
    reason: str


@dataclass(frozen=True, slots=True)
class Subscription:
    plan: str
    period_end: datetime
    daily_quota: int | None


@dataclass(frozen=True, slots=True)
class SubscriptionChange:
    """The account's subscription from this event on: ``active``, or none (``None``)."""

    active: Subscription | None


@dataclass(frozen=True, slots=True)
class Charge:
    """What a job's reservation holds: ``amount`` of ``source`` (0 on the subscription)."""

    source: str
    amount: int


@dataclass(frozen=True, slots=True)
class JobChange:
    """What an event does to the reservation of the job ``job_id``."""

    job_id: UUID
    status: ReservationStatus | None = None  # the reservation's status from this event on
    reserved: Charge | None = None  # the reservation opens, holding this charge ...
    quota_day: str | None = None  # ... counted against this UTC day's subscription quota
    settled: bool = False  # the job succeeded while its charge was held: the charge is kept
    refunded: Charge | None = None  # the charge given back (its quota day use too)


@dataclass(frozen=True, slots=True)
class GrantedLot:
    """A lot an event grants (``ledger.lots``): ``id`` is the event's stream version."""

    id: int
    source: str
    amount: int
    category: str
    expires_at: datetime | None
    granted_at: datetime


@dataclass(frozen=True, slots=True)
class LotMove:
    """Points burnt from (negative) or given back to (positive) one lot."""

    lot: int
    delta: int


@dataclass(frozen=True, slots=True)
class Effect:
    """What one event does. An empty ``Effect`` (``NOTHING``): no points, no subscription,
    no reservation change. ``lot_moves`` None: not recorded (an event from before lots; the
    module's text says what it burnt or gave back)."""

    movements: tuple[Movement, ...] = ()
    subscription: SubscriptionChange | None = None  # None: unchanged
    usage: Usage | None = None
    job: JobChange | None = None
    lot: GrantedLot | None = None
    lot_moves: tuple[LotMove, ...] | None = ()


NOTHING = Effect()


_last: tuple[object, Effect] | None = None  # the event asked last, with its effect


def effect(event: object) -> Effect:
    """What an event of an ``Account`` does (``NOTHING`` for one that changes none of it).

    Events are immutable, so the effect of the event asked last is kept and given again when
    the same event is asked next: a replay that reads an event's effect and evolves the
    account by it (which reads it too) computes it once."""
    global _last
    last = _last
    if last is not None and last[0] is event:
        return last[1]
    meaning = _meanings().get(type(event))
    fx = NOTHING if meaning is None else meaning(event)
    _last = (event, fx)
    return fx


def _moving(
    source: str,
    delta: int,
    flow: Flow,
    line: UsageType,
    reason: str,
    job: JobChange | None = None,
    lot: GrantedLot | None = None,
    lot_moves: tuple[LotMove, ...] | None = (),
) -> Effect:
    """The effect of an event that moves points on one source, with its accounting line."""
    return Effect(
        (Movement(source, delta, flow),),
        usage=Usage(line, source, delta, reason),
        job=job,
        lot=lot,
        lot_moves=lot_moves,
    )


def _lot_moves(records: list[Any] | None, sign: int) -> tuple[LotMove, ...] | None:
    """The lots an event records (``{"lot", "amount"}`` each), burnt (sign -1) or given back."""
    if records is None:
        return None
    return tuple(LotMove(int(r["lot"]), sign * int(r["amount"])) for r in records)


def _granting(e: Any, source: str, amount: int) -> Effect:
    lot = GrantedLot(e.originator_version, source, amount, e.category, e.expires_at, e.timestamp)
    return _moving(source, amount, Flow.GRANTED, UsageType.GRANT, e.reason, lot=lot)


def _credits_granted(e: Account.CreditsGranted) -> Effect:
    return _granting(e, CREDIT, e.amount)


def _tickets_granted(e: Account.TicketsGranted) -> Effect:
    return _granting(e, ticket_source(e.ticket_type), e.count)


def _subscription_activated(e: Account.SubscriptionActivated) -> Effect:
    return Effect(
        subscription=SubscriptionChange(Subscription(e.plan, e.period_end, e.daily_quota)),
        usage=Usage(UsageType.GRANT, SUBSCRIPTION, 0, e.reason),
    )


def _subscription_ended(e: Account.SubscriptionCancelled | Account.SubscriptionExpired) -> Effect:
    return Effect(subscription=SubscriptionChange(None))


def _entitlement_reserved(e: Account.EntitlementReserved) -> Effect:
    job = JobChange(
        e.job_id, ReservationStatus.RESERVED, reserved=Charge(e.source, e.amount), quota_day=e.quota_day
    )
    return _moving(
        e.source,
        -e.amount,
        Flow.RESERVED,
        UsageType.RESERVATION,
        f"{e.kind} job",
        job,
        lot_moves=_lot_moves(e.lots, -1),
    )


def _job_completed(e: Account.JobCompleted) -> Effect:
    usage = Usage(UsageType.SETTLEMENT, None, 0, "job succeeded") if e.charged else None
    return Effect(usage=usage, job=JobChange(e.job_id, ReservationStatus.SUCCEEDED, settled=e.charged))


def _job_failed(e: Account.JobFailed) -> Effect:
    status = ReservationStatus.EXPIRED if e.expired else ReservationStatus.FAILED
    return Effect(job=JobChange(e.job_id, status))


def _job_canceled(e: Account.JobCanceled) -> Effect:
    return Effect(job=JobChange(e.job_id, ReservationStatus.CANCELED))


def _refunded(e: Account.Refunded) -> Effect:
    job = JobChange(e.job_id, refunded=Charge(e.source, e.amount))
    reason = f"{e.cause}: {e.reason}"
    return _moving(
        e.source, e.amount, Flow.REFUNDED, UsageType.REFUND, reason, job, lot_moves=_lot_moves(e.lots, 1)
    )


def _adjusted(e: Account.Adjusted) -> Effect:
    if e.delta > 0:
        lot = GrantedLot(e.originator_version, e.source, e.delta, "paid", None, e.timestamp)
        return _moving(e.source, e.delta, Flow.ADJUSTED, UsageType.ADJUSTMENT, e.reason, lot=lot)
    moves = _lot_moves(e.lots, -1)
    return _moving(e.source, e.delta, Flow.ADJUSTED, UsageType.ADJUSTMENT, e.reason, lot_moves=moves)


def _points_expired(e: Account.PointsExpired) -> Effect:
    reason = f"lot {e.lot} expired"
    moves = (LotMove(e.lot, -e.amount),)
    return _moving(e.source, -e.amount, Flow.EXPIRED, UsageType.EXPIRY, reason, lot_moves=moves)


@cache
def _meanings() -> dict[type[Any], Callable[[Any], Effect]]:
    # The event classes use this module to evolve: import them on first use, not at import.
    from ledger.account import Account

    return {
        Account.CreditsGranted: _credits_granted,
        Account.TicketsGranted: _tickets_granted,
        Account.SubscriptionActivated: _subscription_activated,
        Account.SubscriptionCancelled: _subscription_ended,
        Account.SubscriptionExpired: _subscription_ended,
        Account.EntitlementReserved: _entitlement_reserved,
        Account.JobCompleted: _job_completed,
        Account.JobFailed: _job_failed,
        Account.JobCanceled: _job_canceled,
        Account.Refunded: _refunded,
        Account.Adjusted: _adjusted,
        Account.PointsExpired: _points_expired,
    }


# ------------------------------------------------------------------------ applying effects
class Balances(Protocol):
    """Anything that holds a user's balances: the aggregate, a read model's row."""

    credits: int
    tickets: dict[str, int]


def move(balances: Balances, source: str, delta: int) -> None:
    """Move ``delta`` points on a source (nothing on the subscription: it has no balance)."""
    if source == SUBSCRIPTION:
        return
    if source == CREDIT:
        balances.credits += delta
        return
    ticket_type = ticket_type_of(source)
    if ticket_type is None:
        raise UnknownSource(source)
    balances.tickets[ticket_type] = balances.tickets.get(ticket_type, 0) + delta


def held(balances: Balances, source: str) -> int | None:
    """The balance of a source (None for the subscription: it has none)."""
    if source == SUBSCRIPTION:
        return None
    if source == CREDIT:
        return balances.credits
    ticket_type = ticket_type_of(source)
    if ticket_type is None:
        raise UnknownSource(source)
    return balances.tickets.get(ticket_type, 0)


Day = TypeVar("Day", str, date)  # a quota day: ISO text in the aggregate, a date in read models


def use_quota(day: Day | None, used: int, on: Day) -> tuple[Day, int]:
    """The quota count (day, jobs used) after a subscription-paid job counted on day ``on``:
    a new day starts from 0."""
    return on, (used if day == on else 0) + 1


def give_back_quota(day: Day | None, used: int, on: Day | None) -> int:
    """The jobs used on ``day`` after a refund of a job counted on day ``on`` (``None``: not
    paid by the subscription): only a use of the day still counted is given back."""
    return max(0, used - 1) if on is not None and on == day else used
