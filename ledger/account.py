"""The per-user ``Account`` aggregate: the stream of one user's points and jobs.

Verb methods decide (guards raise domain errors) and trigger past-tense events; each event's
``apply`` evolves the state: by the event's effect (``ledger.effects`` says, once for every
reader, what each event does to balances, the subscription and job reservations), plus what
only the account keeps (job records, idempotency keys). Every command that concerns a job is
idempotent on the job id: repeating it is a no-op, never an error and never a second effect.

Balances are made of lots (``ledger.lots``): each grant is one, with a category and an
optional expiry; a charge burns them in the documented order and records which it burnt, a
refund gives back to those. A lot's expiry is an event (``PointsExpired``, dated at the expiry,
so whoever records it, the sweeper or the next command of the account, records the same): every
command that appends first records the expiries that have come (``_expire_due``), and a refund
to a lot already expired expires again at once.

Bounded state (so that loading and snapshotting stay O(1) in the length of the history):
- a client idempotency key is remembered until ``key_expires_at`` (recorded in the
  reservation event; the application's setting, 24 h by default) and at most
  ``MAX_IDEMPOTENCY_KEYS`` keys are kept (the oldest are forgotten first);
- a finished job (succeeded, failed, canceled, expired) is remembered for
  ``CLOSED_JOB_RETENTION`` after it finished and at most ``MAX_CLOSED_JOBS`` of them are kept,
  so duplicates and admin refunds within that window are recognised; open reservations are
  always kept;
- a lot with nothing left is forgotten once no remembered job burnt it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.effects import Effect, LotMove, effect, give_back_quota, held, move, use_quota
from ledger.errors import (
    BalanceWouldBeNegative,
    IdempotencyKeyReused,
    InsufficientEntitlement,
    InvalidAmount,
    JobAlreadyRefunded,
    JobIdConflict,
    JobNotFound,
    UnknownSource,
)
from ledger.lots import Category, Draw, DrawRecord, LotRecord, draw, due, usable_balance
from ledger.policy import CREDIT, SUBSCRIPTION, PricingPolicy, ticket_source
from ledger.status import RefundCause, ReservationStatus

MAX_IDEMPOTENCY_KEYS = 10_000
CLOSED_JOB_RETENTION = timedelta(days=90)
MAX_CLOSED_JOBS = 5_000

RESERVED = ReservationStatus.RESERVED
EXPIRED = ReservationStatus.EXPIRED


class JobRecord(TypedDict):
    kind: str
    source: str
    amount: int
    status: str
    refunded: bool
    reserved_at: datetime
    quota_day: str | None
    fingerprint: str
    lots: list[DrawRecord]  # what its reservation burnt, lot by lot


class KeyRecord(TypedDict):
    job_id: str
    fingerprint: str
    expires_at: datetime


class SubscriptionState(TypedDict):
    plan: str
    period_end: datetime
    daily_quota: int | None


@dataclass(frozen=True)
class Reservation:
    """What ``request_job`` decided: the charge of the job, whether it is new, and when it
    was reserved (the time its events record)."""

    job_id: UUID
    kind: str
    source: str
    amount: int
    created: bool
    reserved_at: datetime


# Recorded with a job request but not part of what was asked: where it came from (the API's
# request id and trace context), so a retry under another request id is the same request.
UNASKED = frozenset({"trace"})


def fingerprint(kind: str, request: dict[str, Any]) -> str:
    """A stable digest of a job request, to tell a retry from a different request."""
    asked = {k: v for k, v in request.items() if k not in UNASKED}
    canonical = json.dumps({"kind": kind, "request": asked}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def utc_day(at: datetime) -> str:
    """The quota day of an instant: daily quotas reset at midnight UTC."""
    return at.astimezone(UTC).date().isoformat()


def _lot_terms(expires_at: datetime | None, category: str, at: datetime) -> str:
    """A grant's category, checked with its expiry (which must be to come)."""
    if category not in {c.value for c in Category}:
        raise InvalidAmount(f"a grant's category is paid or promotional, not {category!r}")
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= at):
        raise InvalidAmount("a grant must expire in the future, at an instant with a time zone")
    return Category(category).value


def _positive(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidAmount(f"{what} must be a positive integer, got {value!r}")


class Account(Aggregate):
    """One user's entitlements (credits, tickets, subscription) and job reservations."""

    credits: int
    tickets: dict[str, int]
    subscription: SubscriptionState | None
    quota_day: str | None
    quota_used: int
    jobs: dict[str, JobRecord]
    closed: dict[str, datetime]
    keys: dict[str, KeyRecord]
    lots: dict[str, LotRecord]

    def __init__(self) -> None:
        self.credits = 0
        self.tickets = {}
        self.subscription = None
        self.quota_day = None
        self.quota_used = 0
        self.jobs = {}
        self.closed = {}
        self.keys = {}
        self.lots = {}

    # ----------------------------------------------------------------------------- events
    class Event(Aggregate.Event):
        """Base of the account's events. Bump ``class_version`` and add ``upcast_vN_vN+1``
        static methods on an event class to change its shape later.

        What an event does to balances, the subscription and reservations is its effect
        (``ledger.effects``); ``evolve`` records whatever else the account keeps of it."""

        class_version = 1

        def apply(self, aggregate: Any) -> None:
            assert isinstance(aggregate, Account)
            self.evolve(aggregate)
            aggregate._evolve(effect(self), self.timestamp)
            aggregate._forget_expired(self.timestamp)

        def evolve(self, account: Account) -> None:
            pass

    class Opened(Aggregate.Created):
        """The account of a new user; its id is the user's id."""

        class_version = 1

        def apply(self, aggregate: Any) -> None:
            pass

    class CreditsGranted(Event):
        """A lot of credits. ``by``: the acting admin's user id (v2; None for grants made
        before, or by code). ``expires_at``, ``category`` (v3): the lot's expiry (None: never)
        and ``paid`` or ``promotional`` (grants made before: paid, never expiring)."""

        class_version = 3
        amount: int
        reason: str
        by: str | None
        expires_at: datetime | None
        category: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["by"] = None

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["expires_at"] = None
            state["category"] = Category.PAID.value

    class TicketsGranted(Event):
        """A lot of tickets of one type (``expires_at`` and ``category`` as for credits)."""

        class_version = 3
        ticket_type: str
        count: int
        reason: str
        by: str | None
        expires_at: datetime | None
        category: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["by"] = None

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["expires_at"] = None
            state["category"] = Category.PAID.value

    class SubscriptionActivated(Event):
        class_version = 2
        plan: str
        period_end: datetime
        daily_quota: int | None
        reason: str
        by: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["by"] = None

    class SubscriptionCancelled(Event):
        reason: str

    class SubscriptionExpired(Event):
        """The subscription's period ended."""

    class EntitlementReserved(Event):
        """``lots`` (v2): the lots the charge burnt (None: reserved before lots were recorded,
        burnt by the burn order)."""

        class_version = 2
        job_id: UUID
        kind: str
        source: str
        amount: int
        quota_day: str | None
        fingerprint: str
        idempotency_key: str | None
        key_expires_at: datetime | None
        lots: list[DrawRecord] | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["lots"] = None

        def evolve(self, account: Account) -> None:
            """Remember the job (to settle or refund it once) and its idempotency key (the lots
            it burnt are set with its effect)."""
            account.jobs[str(self.job_id)] = JobRecord(
                kind=self.kind,
                source=self.source,
                amount=self.amount,
                status=RESERVED,
                refunded=False,
                reserved_at=self.timestamp,
                quota_day=self.quota_day,
                fingerprint=self.fingerprint,
                lots=[],
            )
            if self.idempotency_key is not None and self.key_expires_at is not None:
                account.keys.pop(self.idempotency_key, None)
                account.keys[self.idempotency_key] = KeyRecord(
                    job_id=str(self.job_id),
                    fingerprint=self.fingerprint,
                    expires_at=self.key_expires_at,
                )

    class JobRequested(Event):
        """The job itself (what to generate); appended with its reservation."""

        job_id: UUID
        kind: str
        request: dict[str, Any]

    class JobCompleted(Event):
        """Settles the reservation (``charged``), or delivers a job already refunded free."""

        job_id: UUID
        outputs: list[dict[str, Any]]
        charged: bool

    class JobFailed(Event):
        job_id: UUID
        error: dict[str, Any]
        expired: bool

    class JobCanceled(Event):
        job_id: UUID
        reason: str

    class Refunded(Event):
        """The reservation of a job given back to the source it was paid from.
        ``cause``: a ``RefundCause`` (failed, canceled, expired, admin or deadline). ``lots`` (v2): the
        lots given back to (None: refunded before lots were recorded: what it burnt)."""

        class_version = 2

        job_id: UUID
        source: str
        amount: int
        cause: str
        reason: str
        by: str | None
        lots: list[DrawRecord] | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["lots"] = None

    class Adjusted(Event):
        """A correction of a balance by an operator (positive: a new paid lot that never
        expires; negative: burns ``lots`` (v2), None before lots were recorded)."""

        class_version = 2
        source: str
        delta: int
        reason: str
        by: str | None
        lots: list[DrawRecord] | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["lots"] = None

    class PointsExpired(Event):
        """What a lot had left when its expiry came (dated at that expiry), or what a refund
        gave back to a lot already expired (dated at the refund)."""

        lot: int
        source: str
        amount: int

    # ---------------------------------------------------------------------------- commands
    @classmethod
    def open(cls, user_id: UUID, at: datetime) -> Account:
        return cls._create(cls.Opened, id=user_id, timestamp=at)

    def grant_credits(
        self,
        amount: int,
        reason: str,
        at: datetime,
        by: str | None = None,
        expires_at: datetime | None = None,
        category: str = Category.PAID,
    ) -> None:
        """A lot of credits (``expires_at`` None: it never expires)."""
        _positive(amount, "credits")
        category = _lot_terms(expires_at, category, at)
        self._expire_due(at)
        self.trigger_event(
            self.CreditsGranted,
            amount=amount,
            reason=reason,
            by=by,
            expires_at=expires_at,
            category=category,
            timestamp=at,
        )

    def grant_tickets(
        self,
        ticket_type: str,
        count: int,
        reason: str,
        at: datetime,
        by: str | None = None,
        expires_at: datetime | None = None,
        category: str = Category.PAID,
    ) -> None:
        """A lot of tickets of one type (``expires_at`` None: it never expires)."""
        _positive(count, "ticket count")
        category = _lot_terms(expires_at, category, at)
        self._expire_due(at)
        self.trigger_event(
            self.TicketsGranted,
            ticket_type=ticket_type,
            count=count,
            reason=reason,
            by=by,
            expires_at=expires_at,
            category=category,
            timestamp=at,
        )

    def expire_lots(self, at: datetime) -> int:
        """Record the expiry of every lot whose expiry has come (the sweeper's command); the
        number of lots expired."""
        return self._expire_due(at)

    def activate_subscription(
        self,
        plan: str,
        period_end: datetime,
        daily_quota: int | None,
        reason: str,
        at: datetime,
        by: str | None = None,
    ) -> None:
        if daily_quota is not None:
            _positive(daily_quota, "daily quota")
        if period_end <= at:
            raise InvalidAmount("a subscription's period must end in the future")
        self._expire_due(at)
        self.trigger_event(
            self.SubscriptionActivated,
            plan=plan,
            period_end=period_end,
            daily_quota=daily_quota,
            reason=reason,
            by=by,
            timestamp=at,
        )

    def cancel_subscription(self, reason: str, at: datetime) -> bool:
        if self.subscription is None:
            return False
        self._expire_due(at)
        self.trigger_event(self.SubscriptionCancelled, reason=reason, timestamp=at)
        return True

    def expire_subscription(self, at: datetime) -> bool:
        if self.subscription is None or self.subscription["period_end"] > at:
            return False
        self._expire_due(at)
        self.trigger_event(self.SubscriptionExpired, timestamp=at)
        return True

    @property
    def entries(self) -> int:
        """How much the account holds besides its balances (open and remembered jobs,
        idempotency keys, lots): what a snapshot's size, and cost, grows with."""
        return len(self.jobs) + len(self.closed) + len(self.keys) + len(self.lots)

    def request_job(
        self,
        job_id: UUID,
        kind: str,
        request: dict[str, Any],
        policy: PricingPolicy,
        at: datetime,
        idempotency_key: str | None,
        key_ttl: timedelta,
    ) -> Reservation:
        """Reserve the job's charge and record the job, in that order of priority:
        subscription (within its daily quota), a ticket of the job's kind, credits."""
        cost = policy.cost(kind)
        digest = fingerprint(kind, request)
        if idempotency_key is not None:
            known = self.keys.get(idempotency_key)
            if known is not None and known["expires_at"] > at:
                if known["fingerprint"] != digest:
                    raise IdempotencyKeyReused(idempotency_key, UUID(known["job_id"]))
                return self._existing(UUID(known["job_id"]))
        existing = self.jobs.get(str(job_id))
        if existing is not None:
            if existing["fingerprint"] != digest:
                raise JobIdConflict(job_id)
            return self._existing(job_id)

        source, amount, quota_day = self._choose_source(kind, cost, policy, at)
        self._expire_due(at)
        burnt = draw(self.lots, source, amount, at) if source != SUBSCRIPTION else ()
        self.trigger_event(
            self.EntitlementReserved,
            job_id=job_id,
            kind=kind,
            source=source,
            amount=amount,
            quota_day=quota_day,
            fingerprint=digest,
            idempotency_key=idempotency_key,
            key_expires_at=at + key_ttl if idempotency_key is not None else None,
            lots=[d.record() for d in burnt],
            timestamp=at,
        )
        self.trigger_event(self.JobRequested, job_id=job_id, kind=kind, request=request, timestamp=at)
        return Reservation(job_id, kind, source, amount, created=True, reserved_at=at)

    def complete_job(self, job_id: UUID, outputs: list[dict[str, Any]], at: datetime) -> bool:
        """Settle a reserved job with its outputs. A job the sweeper already failed and
        refunded is still delivered, free of charge. Anything else is a duplicate: no-op."""
        job = self._job(job_id)
        if job["status"] not in (RESERVED, EXPIRED):
            return False
        charged = job["status"] == RESERVED and not job["refunded"]
        self._expire_due(at)
        self.trigger_event(self.JobCompleted, job_id=job_id, outputs=outputs, charged=charged, timestamp=at)
        return True

    def fail_job(self, job_id: UUID, error: dict[str, Any], at: datetime) -> bool:
        """Fail a reserved job and refund its charge, in one save. Duplicates: no-op."""
        job = self._job(job_id)
        if job["status"] != RESERVED:
            return False
        self._expire_due(at)
        self.trigger_event(self.JobFailed, job_id=job_id, error=error, expired=False, timestamp=at)
        self._refund(
            job_id, job, cause=RefundCause.FAILED, reason=str(error.get("code", "failed")), by=None, at=at
        )
        return True

    def cancel_job(
        self, job_id: UUID, reason: str, at: datetime, cause: RefundCause = RefundCause.CANCELED
    ) -> bool:
        """Cancel a job that has not finished and refund it, for ``cause`` (the user's cancel,
        or the job's deadline passed: ``RefundCause.DEADLINE``). Finished jobs: no-op (False)."""
        job = self._job(job_id)
        if job["status"] != RESERVED:
            return False
        self._expire_due(at)
        self.trigger_event(self.JobCanceled, job_id=job_id, reason=reason, timestamp=at)
        self._refund(job_id, job, cause=cause, reason=reason, by=None, at=at)
        return True

    def admin_refund(self, job_id: UUID, reason: str, by: str | None, at: datetime) -> None:
        """Give a job's charge back once, whatever its status."""
        job = self._job(job_id)
        if job["refunded"]:
            raise JobAlreadyRefunded(job_id)
        self._expire_due(at)
        self._refund(job_id, job, cause=RefundCause.ADMIN, reason=reason, by=by, at=at)

    def expire_reservations(self, cutoff: datetime, at: datetime) -> list[UUID]:
        """Fail and refund every reservation made at or before ``cutoff`` still waiting."""
        expired = [
            UUID(job_id)
            for job_id, job in self.jobs.items()
            if job["status"] == RESERVED and job["reserved_at"] <= cutoff
        ]
        if expired:
            self._expire_due(at)
        for job_id in expired:
            job = self.jobs[str(job_id)]
            error = {"code": "timeout", "message": "no result within the job timeout", "retryable": False}
            self.trigger_event(self.JobFailed, job_id=job_id, error=error, expired=True, timestamp=at)
            self._refund(job_id, job, cause=RefundCause.EXPIRED, reason="timeout", by=None, at=at)
        return expired

    def adjust(self, source: str, delta: int, reason: str, by: str | None, at: datetime) -> None:
        if isinstance(delta, bool) or not isinstance(delta, int) or delta == 0:
            raise InvalidAmount(f"an adjustment must be a non-zero integer, got {delta!r}")
        balance = self.usable(source, at)
        if balance + delta < 0:
            raise BalanceWouldBeNegative(source, balance, delta)
        self._expire_due(at)
        burnt = [d.record() for d in draw(self.lots, source, -delta, at)] if delta < 0 else None
        self.trigger_event(
            self.Adjusted, source=source, delta=delta, reason=reason, by=by, lots=burnt, timestamp=at
        )

    # ------------------------------------------------------------------------------ queries
    def balance_of(self, source: str) -> int:
        """The balance of a source; a subscription has none (0)."""
        return held(self, source) or 0

    def balance(self, source: str) -> int:
        """The balance of a source that has one (credits, a ticket type)."""
        balance = held(self, source)
        if balance is None:
            raise UnknownSource(source)
        return balance

    def usable(self, source: str, at: datetime) -> int:
        """What a source has to burn at ``at``: its balance less the lots whose expiry has come
        and is not recorded yet."""
        self.balance(source)  # a source that has a balance (``UnknownSource`` otherwise)
        return usable_balance(self.lots, source, at)

    def subscription_active(self, at: datetime) -> bool:
        return self.subscription is not None and self.subscription["period_end"] > at

    def quota_used_on(self, day: str) -> int:
        return self.quota_used if self.quota_day == day else 0

    def job(self, job_id: UUID) -> JobRecord | None:
        return self.jobs.get(str(job_id))

    def open_jobs(self) -> dict[str, JobRecord]:
        return {k: v for k, v in self.jobs.items() if v["status"] == RESERVED}

    # ------------------------------------------------------------------------------ helpers
    def _choose_source(
        self, kind: str, cost: int, policy: PricingPolicy, at: datetime
    ) -> tuple[str, int, str | None]:
        if self.subscription_active(at):
            assert self.subscription is not None
            quota = self.subscription["daily_quota"]
            day = utc_day(at)
            if quota is None or self.quota_used_on(day) < quota:
                return SUBSCRIPTION, 0, day
        for ticket_type in policy.tickets_for(kind):
            source = ticket_source(ticket_type)
            if self.tickets.get(ticket_type, 0) >= 1 and usable_balance(self.lots, source, at) >= 1:
                return source, 1, None
        credits = usable_balance(self.lots, CREDIT, at) if self.credits else 0
        if credits >= cost:
            return CREDIT, cost, None
        raise InsufficientEntitlement(kind, cost, credits)

    def _existing(self, job_id: UUID) -> Reservation:
        job = self._job(job_id)
        return Reservation(
            job_id, job["kind"], job["source"], job["amount"], created=False, reserved_at=job["reserved_at"]
        )

    def _job(self, job_id: UUID) -> JobRecord:
        job = self.jobs.get(str(job_id))
        if job is None:
            raise JobNotFound(job_id)
        return job

    def _refund(
        self, job_id: UUID, job: JobRecord, cause: RefundCause, reason: str, by: str | None, at: datetime
    ) -> None:
        if job["refunded"]:
            return
        self.trigger_event(
            self.Refunded,
            job_id=job_id,
            source=job["source"],
            amount=job["amount"],
            cause=cause,
            reason=reason,
            by=by,
            lots=[DrawRecord(lot=d["lot"], amount=d["amount"]) for d in job["lots"]],
            timestamp=at,
        )
        for given in job["lots"]:  # given back to a lot already expired: expired again at once
            lot = self.lots.get(str(given["lot"]))
            if lot is not None and lot["expires_at"] is not None and lot["expires_at"] <= at:
                self.trigger_event(
                    self.PointsExpired,
                    lot=given["lot"],
                    source=lot["source"],
                    amount=given["amount"],
                    timestamp=at,
                )

    def _expire_due(self, at: datetime) -> int:
        """Record the expiry of the lots whose expiry has come (each dated at its expiry)."""
        lot_ids = due(self.lots, at)
        for lot_id in lot_ids:
            lot = self.lots[lot_id]
            expires_at = lot["expires_at"]
            assert expires_at is not None
            self.trigger_event(
                self.PointsExpired,
                lot=int(lot_id),
                source=lot["source"],
                amount=lot["left"],
                timestamp=expires_at,
            )
        return len(lot_ids)

    def _evolve(self, fx: Effect, at: datetime) -> None:
        """Apply an event's effect: move its points (on its lots too), change the
        subscription, count the quota, close or refund the job's reservation."""
        for movement in fx.movements:
            move(self, movement.source, movement.delta)
        if fx.lot is not None:
            lot = fx.lot
            self.lots[str(lot.id)] = LotRecord(
                source=lot.source,
                category=lot.category,
                expires_at=lot.expires_at,
                granted_at=lot.granted_at,
                amount=lot.amount,
                left=lot.amount,
            )
        moves = fx.lot_moves if fx.lot_moves is not None else self._moves_by_rule(fx, at)
        for lot_move in moves:
            self.lots[str(lot_move.lot)]["left"] += lot_move.delta
        if fx.job is not None and fx.job.reserved is not None:
            self.jobs[str(fx.job.job_id)]["lots"] = [DrawRecord(lot=m.lot, amount=-m.delta) for m in moves]
        emptied = [str(m.lot) for m in moves if self.lots[str(m.lot)]["left"] == 0]
        if emptied:
            self._forget_lots(emptied)
        if fx.subscription is not None:
            s = fx.subscription.active
            self.subscription = (
                None
                if s is None
                else SubscriptionState(plan=s.plan, period_end=s.period_end, daily_quota=s.daily_quota)
            )
        change = fx.job
        if change is None:
            return
        job_id = str(change.job_id)
        if change.quota_day is not None:
            self.quota_day, self.quota_used = use_quota(self.quota_day, self.quota_used, change.quota_day)
        if change.status is not None and not change.status.open:
            self.jobs[job_id]["status"] = change.status
            self.closed.pop(job_id, None)
            self.closed[job_id] = at
        job = self.jobs.get(job_id) if change.refunded is not None else None
        if job is not None:  # a refund of a job still remembered
            job["refunded"] = True
            self.quota_used = give_back_quota(self.quota_day, self.quota_used, job["quota_day"])

    def _moves_by_rule(self, fx: Effect, at: datetime) -> tuple[LotMove, ...]:
        """The lots an event from before lots were recorded burnt or gave back
        (``ledger.effects``): a reservation or a negative adjustment burnt by the burn order at
        its time; a refund gave back what its reservation burnt (a job no longer remembered: a
        new lot of what it gives back, paid, never expiring, under the event's version)."""
        if fx.job is not None and fx.job.refunded is not None:
            job = self.jobs.get(str(fx.job.job_id))
            if job is not None:
                return tuple(LotMove(d["lot"], d["amount"]) for d in job["lots"])
            charge = fx.job.refunded
            if charge.source == SUBSCRIPTION:
                return ()
            lot_id = self.version + 1  # the refund's own version (not assigned yet while applying)
            self.lots[str(lot_id)] = LotRecord(
                source=charge.source, category=Category.PAID, expires_at=None, granted_at=at, amount=0, left=0
            )
            return (LotMove(lot_id, charge.amount),)
        burnt: tuple[Draw, ...] = ()
        for movement in fx.movements:
            if movement.delta < 0 and movement.source != SUBSCRIPTION:
                burnt = draw(self.lots, movement.source, -movement.delta, at)
        return tuple(LotMove(d.lot, -d.amount) for d in burnt)

    def _forget_expired(self, now: datetime) -> None:
        """Drop idempotency keys past their expiry and finished jobs past retention (and,
        with them, the lots with nothing left that no remembered job burnt)."""
        while self.keys:
            key, record = next(iter(self.keys.items()))
            if record["expires_at"] > now and len(self.keys) <= MAX_IDEMPOTENCY_KEYS:
                break
            del self.keys[key]
        horizon = now - CLOSED_JOB_RETENTION
        forgot = False
        while self.closed:
            job_id, closed_at = next(iter(self.closed.items()))
            if closed_at > horizon and len(self.closed) <= MAX_CLOSED_JOBS:
                break
            del self.closed[job_id]
            del self.jobs[job_id]
            forgot = True
        if forgot:
            self._forget_lots([k for k, lot in self.lots.items() if lot["left"] == 0])

    def _forget_lots(self, empty: list[str]) -> None:
        """Forget the lots of ``empty`` (nothing left) that no remembered job burnt."""
        burnt = {str(d["lot"]) for job in self.jobs.values() for d in job["lots"]}
        for lot_id in empty:
            if lot_id not in burnt:
                self.lots.pop(lot_id, None)
