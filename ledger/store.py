"""Where the ledger's commands get an account and save what it decided: the account store.

A command is the shape of the eventsourcing ``bankaccounts`` example: get the user's account,
call one of its verb methods, save the events it triggered, in one atomic append. An
``AccountStore`` does that for one decision (``decide(account, now)``): it gives the decision
an account as stored, appends the events the decision triggered with the next versions of the
user's stream, and, when another writer moved the stream meanwhile (the stream version is the
optimistic-concurrency guard), decides again on the account brought up to date. It answers
the decision's value and the notification position of what it appended (None when it
appended nothing), so that a reader can wait until the projections include it.

Two stores implement it, driven by the same property tests and a differential test:

- ``ReferenceStore`` (here): the library's own path, ``repository.get`` then
  ``Application.save()``, and nothing else: every command loads the account from the event
  store. Plain and obviously right; the in-memory ledger runs on it.
- ``infra.account_store.PostgresAccountStore``: the fast one, on PostgreSQL (accounts kept in
  memory and brought up to date by the caller's own read, group commit, pipelined appends,
  locked retries). Its module says how.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, StoredEvent
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from ledger.account import Account
from ledger.errors import AccountNotFound, ConcurrencyRetriesExhausted

if TYPE_CHECKING:
    from ledger.application import LedgerApplication

T = TypeVar("T")
Decision = Callable[[Account, datetime], T]


@dataclass(frozen=True)
class CommandResult(Generic[T]):
    """A command's outcome and the notification position of the events it appended
    (None when it appended nothing, e.g. a duplicate)."""

    value: T
    position: int | None


@dataclass(frozen=True)
class StreamNews:
    """The stored events of a user's stream after version ``after``, read by the caller in a
    statement of its own (the job order reads them with its token and catalog check). A store
    that keeps the account in memory at version ``after`` brings it up to date with them
    instead of reading the stream again (``AccountStore.known_version`` says which version).

    ``after`` 0 (``FROM_SNAPSHOT``: the store holds nothing of the user) asks for the whole
    account: the user's newest ``snapshot`` (None when there is none) and the events after it,
    so that a store builds the account from them instead of loading it."""

    after: int
    events: Sequence[StoredEvent]
    snapshot: StoredEvent | None = None


FROM_SNAPSHOT = 0  # ``StreamNews.after`` for the whole account: the newest snapshot and the events after it


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


class AccountStore(Protocol):
    """Load, decide, append (see the module's text)."""

    def execute(
        self, user_id: UUID, decide: Decision[T], *, create: bool, news: StreamNews | None = None
    ) -> CommandResult[T]:
        """Decide on the user's account as stored and append what it triggered. ``create``:
        a user without an account gets a new one (else ``AccountNotFound``). Domain errors
        raised by ``decide`` are raised, nothing appended. ``ConcurrencyRetriesExhausted``
        when the stream kept moving."""

    def account(self, user_id: UUID) -> Account:
        """A copy of the user's account as stored (``AccountNotFound``)."""

    def known_version(self, user_id: UUID) -> int | None:
        """The version at which this store would take ``StreamNews`` for the user (None: it
        would not use them; ``FROM_SNAPSHOT``: it holds nothing of the user and would build
        the account from them)."""

    def close(self) -> None: ...


def retries_exhausted(user_id: UUID, attempts: int) -> ConcurrencyRetriesExhausted:
    return ConcurrencyRetriesExhausted(f"account {user_id} kept changing; gave up after {attempts} attempts")


class ReferenceStore:
    """The library's own path: ``repository.get``, decide, ``Application.save()``; a collision
    (``IntegrityError``) is decided again after a short, jittered wait. A snapshot is taken
    (``Application.take_snapshot``) when an append reaches a multiple of the interval."""

    def __init__(self, app: LedgerApplication) -> None:
        self.app = app

    def execute(
        self, user_id: UUID, decide: Decision[T], *, create: bool, news: StreamNews | None = None
    ) -> CommandResult[T]:
        attempts = self.app.options.max_attempts
        retrying = Retrying(
            retry=retry_if_exception_type(IntegrityError),
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=0.002, max=0.1),
            before_sleep=lambda _: self.app.stats.conflict(),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(user_id, decide, create)
        except IntegrityError as exc:
            self.app.stats.gave_up()
            raise retries_exhausted(user_id, attempts) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, user_id: UUID, decide: Decision[T], create: bool) -> CommandResult[T]:
        now = self.app.clock()
        try:
            account: Account = self.app.repository.get(user_id)
        except AggregateNotFoundError:
            if not create:
                raise AccountNotFound(user_id) from None
            account = Account.open(user_id, now)
        value = decide(account, now)
        if not account.pending_events:
            return CommandResult(value, None)
        first = account.pending_events[0].originator_version
        recordings = self.app.save(account)
        interval = self.app.options.snapshot_interval
        if self.app.snapshots is not None and account.version // interval != (first - 1) // interval:
            self.app.take_snapshot(user_id, version=account.version)
        return CommandResult(value, max(r.notification.id for r in recordings))

    def account(self, user_id: UUID) -> Account:
        try:
            account: Account = self.app.repository.get(user_id)
        except AggregateNotFoundError:
            raise AccountNotFound(user_id) from None
        return account

    def known_version(self, user_id: UUID) -> int | None:
        return None

    def close(self) -> None:
        pass
