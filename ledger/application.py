"""The ledger application: commands on per-user ``Account`` streams.

Each command is the eventsourcing ``bankaccounts`` shape: get the user's account, call one of
its verb methods, save what it triggered in one atomic append. Where the account comes from
and how the append is made is the account store's (``ledger.store``): the library's own
``repository.get`` + ``Application.save()`` path (``ReferenceStore``, the default and the
in-memory ledger's), or the fast store on PostgreSQL that infrastructure plugs in
(``infra.account_store``). Two commands racing on one account collide on the stream version;
the loser decides again on the account brought up to date. Because every job command is
idempotent on the job id, a command decided again after a write that did land (an error after
commit) cannot charge or refund twice.

Each command returns the notification position of what it wrote, so a reader can wait until
its projections have caught up with its own write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    Mapper,
    Transcoder,
    UUIDAsHex,
)

from ledger.account import Account, Reservation
from ledger.errors import AccountNotFound, InsufficientEntitlement, JobNotFound, UnknownSource
from ledger.lots import Category
from ledger.policy import SUBSCRIPTION, PricingPolicy
from ledger.status import RefundCause, ReservationStatus
from ledger.store import AccountStore, CommandResult, ConflictStats, ReferenceStore, StreamNews
from ledger.transcoding import OrjsonTranscoder

__all__ = ["CommandResult", "LedgerApplication", "LedgerOptions", "StreamNews", "event_mapper", "utc_now"]

T = TypeVar("T")
# The reason a job canceled at its deadline records (its ``JobCanceled`` and refund line).
DEADLINE_REASON = "the job did not finish before its deadline"
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LedgerOptions:
    """How the application runs. No defaults here: every default lives once, in the settings
    object (``infra.settings``), which builds these options."""

    policy: PricingPolicy
    key_ttl: timedelta
    max_attempts: int
    snapshot_interval: int
    cache_size: int


def event_transcoder() -> OrjsonTranscoder:
    """The transcoder of the ledger's stored events (UUIDs, datetimes, decimals): the JSON
    that eventsourcing's ``JSONTranscoder`` stores, read and written with orjson."""
    transcoder = OrjsonTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


def event_mapper() -> Mapper[UUID]:
    """Decodes the ledger's stored events without an event store of its own (for readers of
    the notification log: projections, the audit)."""
    return Mapper(transcoder=event_transcoder())


class LedgerApplication(Application[UUID]):
    """Per-user accounts in one event store (tables ``ledger_events``, ``ledger_snapshots``)."""

    name = "Ledger"
    # Snapshots on; when to take one is the account store's (``snapshot_interval``).
    is_snapshotting_enabled = True

    def __init__(
        self,
        env: Mapping[str, str],
        options: LedgerOptions,
        clock: Clock = utc_now,
        store: Callable[[LedgerApplication], AccountStore] = ReferenceStore,
    ) -> None:
        self.options = options
        self.clock = clock
        self.stats = ConflictStats()
        super().__init__(env=dict(env))
        self.store: AccountStore = store(self)

    def construct_transcoder(self) -> Transcoder:
        return event_transcoder()

    @property
    def policy(self) -> PricingPolicy:
        return self.options.policy

    def close(self) -> None:
        self.store.close()
        super().close()

    # ------------------------------------------------------------------------- machinery
    def _execute(
        self,
        user_id: UUID,
        decide: Callable[[Account, datetime], T],
        *,
        create: bool,
        news: StreamNews | None = None,
    ) -> CommandResult[T]:
        return self.store.execute(user_id, decide, create=create, news=news)

    def account(self, user_id: UUID) -> Account:
        """A copy of the user's account as stored."""
        return self.store.account(user_id)

    def known_version(self, user_id: UUID) -> int | None:
        """The stream version after which ``StreamNews`` for the user are useful to the store
        (None: read none). See ``request_job``."""
        return self.store.known_version(user_id)

    def reservation_status(self, user_id: UUID, job_id: UUID) -> ReservationStatus | None:
        """The status of a job's reservation (None when the account does not know the job:
        never reserved, or forgotten after its retention)."""
        try:
            job = self.account(user_id).job(job_id)
        except AccountNotFound:
            return None
        return None if job is None else ReservationStatus(job["status"])

    def has_account(self, user_id: UUID) -> bool:
        try:
            self.account(user_id)
        except AccountNotFound:
            return False
        return True

    def position(self) -> int:
        """The newest notification position of the event store (0 when empty)."""
        return self.recorder.max_notification_id() or 0

    # ------------------------------------------------------------------------- commands
    def open_account(self, user_id: UUID) -> CommandResult[bool]:
        """Open the user's account; True when it was new."""
        return self._execute(user_id, lambda a, now: bool(a.pending_events), create=True)

    def grant(
        self,
        user_id: UUID,
        reason: str,
        credits: int = 0,
        tickets: Mapping[str, int] | None = None,
        subscription: tuple[str, datetime, int | None] | None = None,
        by: str | None = None,
        expires_at: datetime | None = None,
        category: str = Category.PAID,
    ) -> CommandResult[None]:
        """Credits, tickets and/or a subscription (plan, period end, daily quota) granted
        together, in one save; ``by`` names who granted them (the acting admin's id). The
        credits and each ticket type are a lot each, of ``category``, expiring at
        ``expires_at`` (None: never)."""
        tickets = dict(tickets or {})
        for ticket_type in tickets:
            self.policy.check_ticket_type(ticket_type)

        def decide(account: Account, now: datetime) -> None:
            if credits:
                account.grant_credits(credits, reason, now, by, expires_at, category)
            for ticket_type, count in tickets.items():
                account.grant_tickets(ticket_type, count, reason, now, by, expires_at, category)
            if subscription is not None:
                plan, period_end, quota = subscription
                account.activate_subscription(plan, period_end, quota, reason, now, by)

        return self._execute(user_id, decide, create=True)

    def grant_credits(
        self,
        user_id: UUID,
        amount: int,
        reason: str,
        expires_at: datetime | None = None,
        category: str = Category.PAID,
    ) -> CommandResult[None]:
        return self._execute(
            user_id,
            lambda a, now: a.grant_credits(amount, reason, now, None, expires_at, category),
            create=True,
        )

    def grant_tickets(
        self,
        user_id: UUID,
        ticket_type: str,
        count: int,
        reason: str,
        expires_at: datetime | None = None,
        category: str = Category.PAID,
    ) -> CommandResult[None]:
        self.policy.check_ticket_type(ticket_type)
        return self._execute(
            user_id,
            lambda a, now: a.grant_tickets(ticket_type, count, reason, now, None, expires_at, category),
            create=True,
        )

    def expire_lots(self, users: Iterable[UUID]) -> CommandResult[dict[UUID, int]]:
        """Record the expiry of the lots of ``users`` whose expiry has come (which users hold
        such lots is the caller's question: the sweeper asks the points read model). Returns
        how many lots expired per user and the newest position written."""
        expired: dict[UUID, int] = {}
        position: int | None = None
        for user_id in users:
            result = self._execute(user_id, lambda a, now: a.expire_lots(now), create=False)
            if result.value:
                expired[user_id] = result.value
            if result.position is not None:
                position = max(position or 0, result.position)
        return CommandResult(expired, position)

    def activate_subscription(
        self,
        user_id: UUID,
        plan: str,
        period_end: datetime,
        daily_quota: int | None,
        reason: str,
    ) -> CommandResult[None]:
        return self._execute(
            user_id,
            lambda a, now: a.activate_subscription(plan, period_end, daily_quota, reason, now),
            create=True,
        )

    def cancel_subscription(self, user_id: UUID, reason: str) -> CommandResult[bool]:
        return self._execute(user_id, lambda a, now: a.cancel_subscription(reason, now), create=False)

    def expire_subscription(self, user_id: UUID) -> CommandResult[bool]:
        return self._execute(user_id, lambda a, now: a.expire_subscription(now), create=False)

    def request_job(
        self,
        user_id: UUID,
        job_id: UUID,
        kind: str,
        request: dict[str, Any],
        idempotency_key: str | None = None,
        news: StreamNews | None = None,
    ) -> CommandResult[Reservation]:
        """Reserve the charge of a job and record the job (one atomic save).
        Raises ``InsufficientEntitlement`` (and appends nothing) when nothing can pay.
        ``news``: the user's stream after ``known_version(user_id)``, when the caller read it
        (the job order reads it with its catalog check, so the store need not)."""
        cost = self.policy.cost(kind)
        try:
            return self._execute(
                user_id,
                lambda a, now: a.request_job(
                    job_id, kind, request, self.policy, now, idempotency_key, self.options.key_ttl
                ),
                create=False,
                news=news,
            )
        except AccountNotFound:
            raise InsufficientEntitlement(kind, cost, 0) from None

    def complete_job(self, user_id: UUID, job_id: UUID, outputs: list[dict[str, Any]]) -> CommandResult[bool]:
        return self._execute(user_id, lambda a, now: a.complete_job(job_id, outputs, now), create=False)

    def fail_job(self, user_id: UUID, job_id: UUID, error: dict[str, Any]) -> CommandResult[bool]:
        return self._execute(user_id, lambda a, now: a.fail_job(job_id, error, now), create=False)

    def cancel_job(
        self, user_id: UUID, job_id: UUID, reason: str = "canceled by user"
    ) -> CommandResult[bool]:
        return self._execute(user_id, lambda a, now: a.cancel_job(job_id, reason, now), create=False)

    def cancel_past_deadline(self, jobs: Iterable[tuple[UUID, UUID]]) -> CommandResult[list[UUID]]:
        """Cancel and refund (cause ``deadline``) each job of ``jobs`` (user id, job id) still
        open: the caller found their deadline passed (the sweeper asks the jobs read model,
        ``vto_job.deadline_at``). A job already finished, or forgotten, is left as it is, so a
        pass repeated after a crash refunds nothing twice. Returns the jobs canceled now and
        the newest position written."""
        canceled: list[UUID] = []
        position: int | None = None
        for user_id, job_id in jobs:
            try:
                result = self._execute(user_id, _deadline_cancel(job_id), create=False)
            except (AccountNotFound, JobNotFound):
                continue
            if result.value:
                canceled.append(job_id)
            if result.position is not None:
                position = max(position or 0, result.position)
        return CommandResult(canceled, position)

    def admin_refund(
        self, user_id: UUID, job_id: UUID, reason: str, by: str | None = None
    ) -> CommandResult[None]:
        return self._execute(user_id, lambda a, now: a.admin_refund(job_id, reason, by, now), create=False)

    def adjust(
        self, user_id: UUID, source: str, delta: int, reason: str, by: str | None = None
    ) -> CommandResult[None]:
        if source not in self.policy.sources() or source == SUBSCRIPTION:
            raise UnknownSource(source)
        return self._execute(user_id, lambda a, now: a.adjust(source, delta, reason, by, now), create=True)

    def expire_stale_reservations(
        self, users: Iterable[UUID], now: datetime, timeout: timedelta
    ) -> CommandResult[dict[UUID, list[UUID]]]:
        """Fail and refund the reservations of ``users`` older than ``timeout`` at ``now``
        (which users hold open reservations is the caller's question: the sweeper asks the
        jobs read model). Returns the expired job ids per user and the newest position written."""
        cutoff = now - timeout
        expired: dict[UUID, list[UUID]] = {}
        position: int | None = None
        for user_id in users:
            result = self._execute(user_id, lambda a, at: a.expire_reservations(cutoff, at), create=False)
            if result.value:
                expired[user_id] = result.value
            if result.position is not None:
                position = max(position or 0, result.position)
        return CommandResult(expired, position)


def _deadline_cancel(job_id: UUID) -> Callable[[Account, datetime], bool]:
    """The decision that cancels ``job_id`` at its deadline (refund cause ``deadline``)."""
    return lambda account, now: account.cancel_job(job_id, DEADLINE_REASON, now, RefundCause.DEADLINE)
