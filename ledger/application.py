"""The ledger application: commands on per-user ``Account`` streams.

Every command loads the account, decides, and saves the new events in one atomic write. Two
commands racing on one account collide on the stream version (the event store's primary key);
the loser gets ``IntegrityError``, reloads and decides again, with bounded, jittered retries.
Because every job command is idempotent on the job id, a retry after a write that did land
(an error after commit) cannot charge or refund twice.

Each command returns the notification position of what it wrote, so a reader can wait until
its projections have caught up with its own write.

When the recorder can pipeline appends (``AppendPipeline``: the group commit), commands on one
user do not wait for each other's commits: each decides on the cached account as the earlier
ones left it, submits its events after theirs, and only then waits for its own commit, outside
the user's lock. The recorder writes a user's appends in order and never writes one whose
predecessor failed; the first command to learn of a failure drops the cached account (it holds
events that were never saved) and every command behind it decides again on the stored account.
A command that appends nothing (a refusal, an idempotent repeat) is answered only once the
appends before it are written, so nothing is answered from state that might not last.
A recorder that cannot pipeline (in memory) writes each append as it is submitted, under the
user's lock (``_WriteAtOnce``): the same code, with nothing ever in flight.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.persistence import (
    ApplicationRecorder,
    DatetimeAsISO,
    DecimalAsStr,
    IntegrityError,
    Mapper,
    StoredEvent,
    Transcoder,
    UUIDAsHex,
)
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from ledger.account import Account, Reservation
from ledger.errors import (
    AccountNotFound,
    ConcurrencyRetriesExhausted,
    InsufficientEntitlement,
    LedgerError,
    UnknownSource,
)
from ledger.policy import SUBSCRIPTION, PricingPolicy
from ledger.status import ReservationStatus
from ledger.transcoding import OrjsonTranscoder

T = TypeVar("T")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class AppendTicket(Protocol):
    """An append submitted to an ``AppendPipeline``."""

    done: bool

    @property
    def failed(self) -> bool: ...

    def wait(self) -> None:
        """Wait until the outcome is known (any thread)."""

    def result(self) -> Sequence[int] | None:
        """Write or wait (the submitting thread, once), then the notification ids or the error."""


@runtime_checkable
class AppendPipeline(Protocol):
    """A recorder that queues appends in order and writes an append only if the one it is
    submitted ``after`` (an earlier append of the same stream) was written."""

    def submit(self, stored_events: Sequence[StoredEvent], after: Any = None) -> AppendTicket: ...


class _Written:
    """An append written as it is submitted (its outcome known at once)."""

    def __init__(self, ids: Sequence[int] | None, error: Exception | None) -> None:
        self.ids, self.error, self.done = ids, error, True

    @property
    def failed(self) -> bool:
        return self.error is not None

    def wait(self) -> None:
        return None

    def result(self) -> Sequence[int] | None:
        if self.error is not None:
            raise self.error
        return self.ids


class _WriteAtOnce:
    """The pipeline of a recorder that cannot pipeline (in memory): each append is written
    when it is submitted, under the user's lock, so a user's appends never overlap."""

    def __init__(self, recorder: ApplicationRecorder) -> None:
        self.recorder = recorder

    def submit(self, stored_events: Sequence[StoredEvent], after: Any = None) -> AppendTicket:
        if after is not None and after.failed:  # never the case: a failed tail is dropped first
            return _Written(None, IntegrityError("an earlier append of this stream failed"))
        try:
            return _Written(self.recorder.insert_events(stored_events), None)
        except Exception as exc:  # noqa: BLE001 - raised by ``result()``, in the command
            return _Written(None, exc)


@dataclass(frozen=True)
class CommandResult(Generic[T]):
    """A command's outcome and the notification position of the events it appended
    (None when it appended nothing, e.g. a duplicate)."""

    value: T
    position: int | None


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


class ConflictStats:
    """Counters of optimistic-concurrency conflicts, for metrics and benchmarks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.conflicts = 0
        self.exhausted = 0

    def conflict(self) -> None:
        with self._lock:
            self.conflicts += 1

    def gave_up(self) -> None:
        with self._lock:
            self.exhausted += 1


class LedgerApplication(Application[UUID]):
    """Per-user accounts in one event store (tables ``ledger_events``, ``ledger_snapshots``)."""

    name = "Ledger"
    LOCK_STRIPES = 256
    # Snapshots on; the interval is the instance's option (``snapshot_interval``).
    is_snapshotting_enabled = True

    def __init__(
        self,
        env: Mapping[str, str],
        options: LedgerOptions,
        clock: Clock = utc_now,
        wrap_recorder: Callable[[ApplicationRecorder], ApplicationRecorder] | None = None,
    ) -> None:
        self.options = options
        # Infrastructure may wrap the event store's recorder (e.g. to commit the appends of
        # concurrent commands together); the ledger's rules do not depend on it.
        self._wrap_recorder = wrap_recorder
        self.clock = clock
        self.stats = ConflictStats()
        self._user_locks = [threading.Lock() for _ in range(self.LOCK_STRIPES)]
        # Per user: the newest submitted append whose events the cached account holds, while
        # the account is trusted with them (pipelining; see the module's text).
        # Each entry also names its chain (appends submitted one after another), so that a
        # failure drops the cached account only while it still holds that chain's events.
        self._tails: dict[UUID, tuple[AppendTicket, int]] = {}
        self._chains = itertools.count()
        cache = {
            self.AGGREGATE_CACHE_MAXSIZE: str(self.options.cache_size),
            self.AGGREGATE_CACHE_FASTFORWARD: "y",
        }
        super().__init__(env={**cache, **env})
        recorder = self.recorder
        self._pipeline: AppendPipeline = (
            recorder if isinstance(recorder, AppendPipeline) else _WriteAtOnce(recorder)
        )

    # ------------------------------------------------------------------------- snapshots
    def snapshot_interval_for(self, entries: int) -> int:
        """Events between snapshots of an account holding ``entries`` (``Account.entries``):
        ``snapshot_interval``, or the least power of two times it that is at least
        ``entries``. A snapshot costs in proportion to what it holds, so its cost is spread
        over at least as many events, and a load replays at most that many after it."""
        interval = self.options.snapshot_interval
        while interval < entries:
            interval *= 2
        return interval

    def _snapshot_of(self, account: Account, first_version: int) -> StoredEvent | None:
        """The account's snapshot at its version, encoded, when the events just decided
        (``first_version`` to its version) reach a multiple of its snapshot interval; else
        None. Taken from the account in memory (no reload, no replay), by the thread that
        decided, before anything else changes it; stored only once those events are."""
        if self.snapshots is None:
            return None
        interval = self.snapshot_interval_for(account.entries)
        if account.version // interval == (first_version - 1) // interval:
            return None
        snapshot = type(account).Snapshot.take(account)
        return self.snapshots.mapper.to_stored_event(snapshot)

    def _store_snapshot(self, stored: StoredEvent | None) -> None:
        if stored is not None and self.snapshots is not None:
            self.snapshots.recorder.insert_events([stored])

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """``save()``: the saved accounts' snapshots (``_snapshot_of``), their events stored."""
        for account in processing_event.aggregates.values():
            versions = [
                e.originator_version for e in processing_event.events if e.originator_id == account.id
            ]
            if isinstance(account, Account) and versions:
                self._store_snapshot(self._snapshot_of(account, min(versions)))

    def construct_recorder(self) -> ApplicationRecorder:
        recorder = super().construct_recorder()
        return recorder if self._wrap_recorder is None else self._wrap_recorder(recorder)

    def construct_transcoder(self) -> Transcoder:
        return event_transcoder()

    @property
    def policy(self) -> PricingPolicy:
        return self.options.policy

    # ------------------------------------------------------------------------- machinery
    def _execute(
        self, user_id: UUID, decide: Callable[[Account, datetime], T], *, create: bool
    ) -> CommandResult[T]:
        retrying = Retrying(
            retry=retry_if_exception_type(IntegrityError),
            stop=stop_after_attempt(self.options.max_attempts),
            wait=wait_random_exponential(multiplier=0.002, max=0.1),
            before_sleep=lambda _: self.stats.conflict(),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(user_id, decide, create=create)
        except IntegrityError as exc:
            self.stats.gave_up()
            raise ConcurrencyRetriesExhausted(
                f"account {user_id} kept changing; gave up after {self.options.max_attempts} attempts"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _user_lock(self, user_id: UUID) -> threading.Lock:
        return self._user_locks[user_id.int % self.LOCK_STRIPES]

    def _attempt(
        self, user_id: UUID, decide: Callable[[Account, datetime], T], *, create: bool
    ) -> CommandResult[T]:
        """Load, decide, save. Commands on one user decide one at a time within this process
        (on the cached account in place, without copying it); processes race on the stream
        version. Whatever fails after the load drops the cached account, which may hold
        events that were never saved.

        A cached account is first trusted as it is, without asking the event store for newer
        events (one query less per command): a decision that appends is saved with the next
        stream version, so an account that another process changed meanwhile collides on the
        version and is reloaded (``IntegrityError``, retried). Only a decision that appends
        nothing (a refusal, an idempotent repeat) cannot be checked that way: it is made again
        on the account brought up to date before it is answered, and, while earlier appends
        of the user are in flight, only once they are written.

        The user's lock is held to decide and to submit the append, not while it is written
        (pipelining, the module's text)."""
        lock = self._user_lock(user_id)
        while True:
            with lock:
                tail = self._trusted_tail(user_id)
                now = self.clock()
                account = self._cached(user_id)
                if account is not None:
                    try:
                        value = decide(account, now)
                    except LedgerError:  # a refusal: decided again on the up-to-date account
                        if account.pending_events or tail is None:
                            self._drop(user_id)
                        account = None
                    except BaseException:
                        self._drop(user_id)
                        raise
                    else:
                        if not account.pending_events:  # nothing to append: decided again
                            account = None
                if account is None and tail is None:
                    account, value = self._decide_loaded(user_id, decide, now, create=create)
                    if not account.pending_events:
                        return CommandResult(value, None)
                if account is not None:
                    submitted = self._submit(user_id, account, tail)
                    break
            # A decision that appends nothing, made while earlier appends of the user are in
            # flight, is made again once they are written.
            assert tail is not None
            tail[0].wait()
        return self._finish(user_id, value, *submitted)

    def _trusted_tail(self, user_id: UUID) -> tuple[AppendTicket, int] | None:
        """The user's newest append still being written, or None. An append that failed
        leaves a cached account holding events never saved: it is dropped."""
        entry = self._tails.get(user_id)
        if entry is None or not entry[0].done:
            return entry
        del self._tails[user_id]
        if entry[0].failed:
            self._evict(user_id)
        return None

    def _submit(
        self,
        user_id: UUID,
        account: Account,
        tail: tuple[AppendTicket, int] | None,
    ) -> tuple[StoredEvent | None, AppendTicket, int]:
        """Submit the account's new events after the user's appends in flight (``tail``),
        and the account's snapshot when one is due (stored once they are written)."""
        try:
            events = account.collect_events()
            stored = [self.mapper.to_stored_event(event) for event in events]
            snapshot = self._snapshot_of(account, events[0].originator_version)
        except BaseException:
            self._drop(user_id)
            raise
        chain = next(self._chains) if tail is None else tail[1]
        ticket = self._pipeline.submit(stored, after=None if tail is None else tail[0])
        self._tails[user_id] = (ticket, chain)
        return snapshot, ticket, chain

    def _finish(
        self,
        user_id: UUID,
        value: T,
        snapshot: StoredEvent | None,
        ticket: AppendTicket,
        chain: int,
    ) -> CommandResult[T]:
        """Wait for the submitted append to be written, then answer (outside the user's lock)."""
        try:
            ids = ticket.result()
        except BaseException:
            with self._user_lock(user_id):
                entry = self._tails.get(user_id)
                if entry is not None and entry[1] == chain:  # the cached account holds it
                    self._drop(user_id)
            raise
        with self._user_lock(user_id):
            entry = self._tails.get(user_id)
            if entry is not None and entry[0] is ticket:
                del self._tails[user_id]
        self._store_snapshot(snapshot)
        return CommandResult(value, max(ids) if ids else None)

    def _drop(self, user_id: UUID) -> None:
        """Forget the cached account and the appends it was trusted with."""
        self._tails.pop(user_id, None)
        self._evict(user_id)

    def _decide_loaded(
        self, user_id: UUID, decide: Callable[[Account, datetime], T], now: datetime, *, create: bool
    ) -> tuple[Account, T]:
        """Decide on the account from the event store (the cached one brought up to date), or
        on a new one; a decision that fails drops the cached account."""
        try:
            account: Account = self.repository.get(user_id, deepcopy_from_cache=False)
        except AggregateNotFoundError:
            if not create:
                raise AccountNotFound(user_id) from None
            account = Account.open(user_id, now)
        try:
            return account, decide(account, now)
        except BaseException:
            self._drop(user_id)
            raise

    def _cached(self, user_id: UUID) -> Account | None:
        """The cached account as it is (not brought up to date), or None."""
        if self.repository.cache is None:
            return None
        try:
            cached = self.repository.cache.get(user_id)
        except KeyError:
            return None
        assert isinstance(cached, Account)
        return cached

    def _evict(self, user_id: UUID) -> None:
        if self.repository.cache is not None:
            with contextlib.suppress(KeyError):
                self.repository.cache.get(user_id, evict=True)

    def account(self, user_id: UUID) -> Account:
        """A copy of the user's account as stored, for reading (once the user's appends in
        flight are written)."""
        while True:
            with self._user_lock(user_id):
                tail = self._trusted_tail(user_id)
                if tail is None:
                    try:
                        return self.repository.get(user_id)
                    except AggregateNotFoundError:
                        raise AccountNotFound(user_id) from None
            tail[0].wait()

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
    ) -> CommandResult[None]:
        """Credits, tickets and/or a subscription (plan, period end, daily quota) granted
        together, in one save; ``by`` names who granted them (the acting admin's id)."""
        tickets = dict(tickets or {})
        for ticket_type in tickets:
            self.policy.check_ticket_type(ticket_type)

        def decide(account: Account, now: datetime) -> None:
            if credits:
                account.grant_credits(credits, reason, now, by)
            for ticket_type, count in tickets.items():
                account.grant_tickets(ticket_type, count, reason, now, by)
            if subscription is not None:
                plan, period_end, quota = subscription
                account.activate_subscription(plan, period_end, quota, reason, now, by)

        return self._execute(user_id, decide, create=True)

    def grant_credits(self, user_id: UUID, amount: int, reason: str) -> CommandResult[None]:
        return self._execute(user_id, lambda a, now: a.grant_credits(amount, reason, now), create=True)

    def grant_tickets(self, user_id: UUID, ticket_type: str, count: int, reason: str) -> CommandResult[None]:
        self.policy.check_ticket_type(ticket_type)
        return self._execute(
            user_id, lambda a, now: a.grant_tickets(ticket_type, count, reason, now), create=True
        )

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
    ) -> CommandResult[Reservation]:
        """Reserve the charge of a job and record the job (one atomic save).
        Raises ``InsufficientEntitlement`` (and appends nothing) when nothing can pay."""
        cost = self.policy.cost(kind)
        try:
            return self._execute(
                user_id,
                lambda a, now: a.request_job(
                    job_id, kind, request, self.policy, now, idempotency_key, self.options.key_ttl
                ),
                create=False,
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
