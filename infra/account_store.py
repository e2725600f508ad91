"""The fast account store on PostgreSQL (``ledger.store.AccountStore``; ``ReferenceStore`` is
its plain twin, and the same property tests and a differential test drive both).

What makes it fast, and why the cost of a command does not depend on which process gets it:

- **Accounts in memory, brought up to date before each decision.** A process keeps the
  accounts it has used (``account_cache_size``). Before it decides, the account gets the events
  of its stream after the version it holds, so that a decision is made on the account as
  stored whichever process wrote last: from ``StreamNews`` the caller read in a statement it
  makes anyway (the job order reads them with its token and catalog check: no extra round
  trip), else from a read of its own (one indexed range read, usually empty). An account not
  in memory (``known_version`` is ``FROM_SNAPSHOT``) is built from the caller's news too, when
  they carry the newest snapshot and the events after it (the job order's read does), else
  loaded (``repository.get``: two reads, the snapshot and the events after it).
- **Group commit** (``infra.group_commit``): the appends of concurrent commands are written
  in one statement, each only if its stream is still where the command decided (a collision
  leaves the rest of the batch written).
- **Pipelined appends of one user.** While appends of a user are being written, the next
  command of that user decides on the account they leave and submits its events after theirs
  (no read: nothing else can be newer than what this process is writing, and if another
  process wrote meanwhile the chain collides and is decided again). The user's lock (one of
  ``LOCK_STRIPES``) is held to decide and to submit, never while an append is written. An
  append whose predecessor failed is never written (the stream gets no gap); the first
  command to learn of a failure drops the account from memory, but only while it still holds
  that chain (chains are numbered). A refusal or an idempotent repeat decided behind appends
  in flight is decided again once they are written, so nothing is answered from state that
  might not last.
- **A collision costs one more round trip and never repeats.** The command is decided again
  inside a transaction that holds the table lock (``GroupCommitWriter.exclusive``): the
  events read there are the stream as it is, and the append cannot collide. So a user busy on
  several processes at once is served in turn, never starved, and no request waits on a
  collision while holding the catalog's connection (the API released it after its read).
  A process runs one such transaction per user at a time; the user's commands that come
  meanwhile wait in a queue, holding nothing, and the next transaction decides them all.
  After a collision the user's commands are decided that way for ``contention_window_s``,
  and for that long again each time such a transaction finds events another process wrote:
  while the user is busy elsewhere too, no optimistic attempt collides again (a collision
  drops the account, and its reload costs as much as the account holds). The window is at
  least twice as long as this process last took to load the user's account
  (``contention_window``): a big account (a seller with tens of thousands of jobs waiting)
  takes seconds to load, the other process may be loading it that long after its own
  collision, and a window that ran out meanwhile let this process's next optimistic attempt
  collide with the other's return, drop the account and load it again, and so on in turn
  (measured: 15 loads of 2.5 to 9 s each in a minute of 64 concurrent orders for one user on
  two processes).

Snapshots are taken from the account in memory by the command that reaches the interval (no
reload, no replay), encoded before anything else changes the account, and stored only once its
events are: ``snapshot_interval``, or the least power of two times it that covers what the
account holds (``Account.entries``), so a snapshot's cost is spread over at least as many
events and a load replays at most that many. Turns decided under the table lock take theirs
once their transaction has committed and they are answered, not while every process's appends
wait for the lock.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, LRUCache
from eventsourcing.persistence import IntegrityError, StoredEvent

from infra.group_commit import Append, GroupCommitWriter
from ledger.account import Account
from ledger.application import LedgerApplication
from ledger.errors import AccountNotFound, LedgerError
from ledger.store import FROM_SNAPSHOT, CommandResult, Decision, StreamNews, retries_exhausted

T = TypeVar("T")
log = logging.getLogger(__name__)
Submitted = tuple[StoredEvent | None, Append, int]


class Turn:
    """A command waiting to be decided under the table lock, then its outcome. ``ready`` is
    set when it is finished, or when it is made the lead (it then serves the turns queued)."""

    __slots__ = ("create", "decide", "error", "finished", "lead", "ready", "result")

    def __init__(self, decide: Decision[Any], create: bool) -> None:
        self.decide = decide
        self.create = create
        self.result: CommandResult[Any] | None = None
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self.lead = False
        self.ready = threading.Event()

    def finish(self, result: CommandResult[Any] | None = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.finished.set()
        self.ready.set()

    def promote(self) -> None:
        self.lead = True
        self.ready.set()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class Abandoned(IntegrityError):
    """A transaction of turns given up: ``turn``'s decision failed half way (``cause``); the
    other turns of it are decided again."""

    def __init__(self, turn: Turn, cause: BaseException) -> None:
        super().__init__(f"decided again: another command of the user failed ({cause!r})")
        self.turn = turn
        self.cause = cause


def snapshot_interval_for(interval: int, entries: int) -> int:
    """Events between snapshots of an account holding ``entries``: ``interval``, or the least
    power of two times it that is at least ``entries``."""
    while interval < entries:
        interval *= 2
    return interval


class PostgresAccountStore:
    """See the module's text. ``writer`` appends; the application gives the mapper, the
    repository (loads), the snapshot store, the clock and the options."""

    LOCK_STRIPES = 256
    CONTENTION_MEMORY = 10_000  # users remembered as contended before expired ones are forgotten
    CONTENTION_WINDOW_MAX_S = 60.0  # the longest window a slow load lengthens it to

    def __init__(self, app: LedgerApplication, writer: GroupCommitWriter, contention_window_s: float) -> None:
        self.app = app
        self.writer = writer
        self.contention_window_s = contention_window_s
        self._contention: dict[UUID, float] = {}  # user -> until when they are decided under the lock
        # Users whose account took this process long to load (half a window or more): seconds.
        self._load_seconds: dict[UUID, float] = {}
        self.monotonic = time.monotonic  # the clock of the windows and the loads (tests set their own)
        self._turns: dict[UUID, list[Turn]] = {}  # user -> turns waiting for the lock
        self.cache: LRUCache[UUID, Account] = LRUCache(app.options.cache_size)
        self._locks = [threading.Lock() for _ in range(self.LOCK_STRIPES)]
        # Per user: the newest submitted append whose events the cached account holds, while
        # the account is trusted with them, and the chain it belongs to.
        self._tails: dict[UUID, tuple[Append, int]] = {}
        self._chains = itertools.count()
        # Users whose account was dropped (an append that failed, a decision that failed half
        # way): loaded by the store itself, not built from callers' news (``known_version``).
        self._dropped: set[UUID] = set()

    # ------------------------------------------------------------------------ AccountStore
    def execute(
        self, user_id: UUID, decide: Decision[T], *, create: bool, news: StreamNews | None = None
    ) -> CommandResult[T]:
        """The first attempt is optimistic (group commit, pipelining); every attempt after a
        collision is made under the table lock."""
        attempts = self.app.options.max_attempts
        for attempt in range(attempts):
            try:
                if attempt == 0 and not self._contended(user_id):
                    result = self._optimistic(user_id, decide, create, news)
                    if result is not None:
                        return result
                    # The user's turns are being decided under the lock: this one joins them.
                return self._exclusive(user_id, decide, create)
            except IntegrityError:
                self.app.stats.conflict()
                self._contend(user_id)
        self.app.stats.gave_up()
        raise retries_exhausted(user_id, attempts)

    def _contended(self, user_id: UUID) -> bool:
        until = self._contention.get(user_id)
        return until is not None and until > self.monotonic()

    def _contend(self, user_id: UUID) -> None:
        """After a collision, and whenever a transaction under the table lock finds events of
        the user that another process wrote, the user's commands are decided under the table
        lock for ``contention_window_s``: another process is writing the user too, and
        optimistic attempts would keep colliding. For ``contention_window``."""
        now = self.monotonic()
        if len(self._contention) >= self.CONTENTION_MEMORY:
            for user, until in list(self._contention.items()):
                if until <= now:
                    self._contention.pop(user, None)
        self._contention[user_id] = now + self.contention_window(user_id)

    def contention_window(self, user_id: UUID) -> float:
        """How long the user's commands are decided under the table lock after a collision or
        another process's events: ``contention_window_s``, or twice as long as this process
        last took to load the account when that is longer (at most
        ``CONTENTION_WINDOW_MAX_S``); 0 (never) stays 0."""
        base = self.contention_window_s
        if base <= 0:
            return base
        return max(base, min(2 * self._load_seconds.get(user_id, 0.0), self.CONTENTION_WINDOW_MAX_S))

    def _timed_load(self, user_id: UUID, started: float) -> None:
        """Remember how long the user's account took to load since ``started``, when that is
        half a window or more (the rest are forgotten: few users are remembered); nothing
        when the window is 0 (``contention_window`` then ignores the loads)."""
        if self.contention_window_s <= 0:
            return
        took = self.monotonic() - started
        if 2 * took < self.contention_window_s:
            self._load_seconds.pop(user_id, None)
            return
        if len(self._load_seconds) >= self.CONTENTION_MEMORY:
            self._load_seconds.clear()  # rare: they are timed again at their next load
        self._load_seconds[user_id] = took

    def account(self, user_id: UUID) -> Account:
        """A copy of the account as stored, once the user's appends in flight are written;
        loaded afresh while the user's turns are decided (the transaction deciding them has
        the account in memory)."""
        while True:
            with self._lock(user_id):
                deciding = user_id in self._turns
                tail = None if deciding else self._trusted_tail(user_id)
                if not deciding and tail is None:
                    account = self._current(user_id, None)
                    if account is None:
                        raise AccountNotFound(user_id)
                    return copy.deepcopy(account)
            if tail is not None:
                tail[0].wait()
                continue
            loaded = self._load(user_id)
            if loaded is None:
                raise AccountNotFound(user_id)
            return loaded

    def known_version(self, user_id: UUID) -> int | None:
        """The version of the account in memory; ``FROM_SNAPSHOT`` for a user this process
        holds nothing of; None while the user's appends are in flight (the chain, not news,
        decides what is next), while the user is decided under the lock, and for an account
        just dropped. In those, a user busy on several processes, concurrent commands would
        each read the whole account (snapshot and events after it) with their catalog check,
        where the store loads it once under the user's lock."""
        entry = self._tails.get(user_id)
        if entry is not None and not entry[0].done:
            return None
        account = self._cached(user_id)
        if account is not None:
            return account.version
        if user_id in self._dropped or user_id in self._turns or self._contended(user_id):
            return None
        return FROM_SNAPSHOT

    def close(self) -> None:
        # A new cache: ``LRUCache.clear()`` resets its recency list but keeps its entries.
        self.cache = LRUCache(self.app.options.cache_size)

    # ------------------------------------------------------------------------ attempts
    def _optimistic(
        self, user_id: UUID, decide: Decision[T], create: bool, news: StreamNews | None
    ) -> CommandResult[T] | None:
        """None when the user's turns are being decided under the table lock: the account in
        memory is that transaction's until it ends (``_serve``), so the command joins them."""
        lock = self._lock(user_id)
        while True:
            with lock:
                if user_id in self._turns:
                    return None
                tail = self._trusted_tail(user_id)
                now = self.app.clock()
                if tail is None:
                    account = self._current(user_id, news) or self._opened(user_id, now, create)
                    value = self._decide(user_id, account, decide, now)
                    if not account.pending_events:
                        return CommandResult(value, None)
                    submitted = self._submit(user_id, account, None)
                    break
                pipelined = self._cached(user_id)
                if pipelined is not None:
                    try:
                        value = decide(pipelined, now)
                    except LedgerError:  # decided again once the appends in flight are written
                        if pipelined.pending_events:
                            self._drop(user_id)
                    except BaseException:
                        self._drop(user_id)
                        raise
                    else:
                        if pipelined.pending_events:
                            submitted = self._submit(user_id, pipelined, tail)
                            break
            # Nothing to append (a refusal, a repeat) while earlier appends of the user are
            # in flight: decided again once they are written.
            tail[0].wait()
        return self._finish(user_id, value, *submitted)

    def _exclusive(self, user_id: UUID, decide: Decision[T], create: bool) -> CommandResult[T]:
        """Decide under the table lock. A process runs one such transaction per user at a
        time: the user's commands that come while it runs queue (the optimistic ones too),
        and the next transaction decides them together, in the order they came
        (``_take_turns``), led by the first of them. The user's lock is not held while a
        transaction runs (it would hold up the other users of its stripe, and the user's own
        commands could not queue): while the user has turns, the account in memory is the
        transaction's alone, since ``_optimistic`` joins the queue and ``account`` loads
        afresh."""
        turn = Turn(decide, create)
        with self._lock(user_id):
            queue = self._turns.get(user_id)
            if queue is None:  # no transaction of the user's in this process: this one leads
                self._turns[user_id] = []
                turn.lead = True
            else:
                queue.append(turn)
        if not turn.lead:
            turn.ready.wait()
        if not turn.finished.is_set():
            self._serve(user_id, turn)
        return turn.outcome()

    def _serve(self, user_id: UUID, lead: Turn) -> None:
        """Decide ``lead`` and the turns queued behind it (once the user's appends in flight
        are written) in one transaction, then hand the lead to the first turn queued since,
        or end the user's queue."""
        lock = self._lock(user_id)
        while True:
            with lock:
                tail = self._trusted_tail(user_id)
                if tail is None:
                    turns = [lead, *self._turns[user_id]]
                    self._turns[user_id] = []
                    break
            tail[0].wait()
        try:
            self._take_turns(user_id, turns)
        finally:
            with lock:
                queue = self._turns[user_id]
                if queue:
                    queue.pop(0).promote()
                else:
                    del self._turns[user_id]

    def _take_turns(self, user_id: UUID, turns: list[Turn]) -> None:
        """One transaction holding the table lock: the account brought up to date there, each
        turn decided on it in order, everything they triggered appended, committed, and only
        then each turn answered (a refusal too: it may rest on an earlier turn's events).
        Every turn is finished, whatever happens: if a decision failed half way (events
        triggered, then an error), its turn gets its error and the others ``Abandoned`` (they
        are decided again); nothing is appended."""
        answers: list[tuple[Turn, Any, int, BaseException | None]] = []
        try:
            known = self._cached(user_id) or self._load(user_id)
            with self.writer.exclusive() as tx:
                written = tx.read_after(user_id, known.version if known else 0)
                if written and known is not None:
                    # Another process wrote the user since: it is busy there too, so its commands
                    # stay under the lock (an optimistic one would collide, and a collision drops
                    # the account, whose reload costs as much as it holds).
                    self._contend(user_id)
                account = self._advanced(known, written)
                for turn in turns:
                    now = self.app.clock()
                    opened = account is None
                    if account is None:
                        if not turn.create:
                            answers.append((turn, None, 0, AccountNotFound(user_id)))
                            continue
                        account = Account.open(user_id, now)
                    before = len(account.pending_events)
                    try:
                        value = turn.decide(account, now)
                    except LedgerError as exc:
                        if opened:
                            account = None  # not opened after all
                        elif len(account.pending_events) != before:
                            raise Abandoned(turn, exc) from exc
                        answers.append((turn, None, 0, exc))
                        continue
                    except BaseException as exc:
                        raise Abandoned(turn, exc) from exc
                    answers.append((turn, value, len(account.pending_events) - before, None))
                events = account.collect_events() if account is not None else []
                stored = [self.app.mapper.to_stored_event(event) for event in events]
                tx.append(stored)
            ids = tx.written()
        except BaseException as exc:
            self._drop(user_id)  # it may hold events that were never saved
            for turn in turns:
                if isinstance(exc, Abandoned):
                    turn.finish(error=exc.cause if turn is exc.turn else exc)
                else:
                    turn.finish(error=exc)
            if not isinstance(exc, Exception):
                raise
            return
        if account is not None:
            self._keep(user_id, account)
        start = 0
        for turn, value, count, error in answers:
            if error is not None:
                turn.finish(error=error)
            else:
                turn.finish(result=CommandResult(value, max(ids[start : start + count]) if count else None))
                start += count
        if account is not None and events:
            self._snapshot_committed(user_id, account, events[0].originator_version)

    def _snapshot_committed(self, user_id: UUID, account: Account, first_version: int) -> None:
        """The snapshot of turns whose events are committed, when one is due (``_snapshot_of``),
        taken and stored after the transaction, not under the table lock every process's
        appends wait for (a big account's snapshot takes half a second: 64,000 entries), and
        after the turns are answered. The account is still the turns' (the user's commands
        queue until ``_serve`` hands the lead on). A snapshot that cannot be taken or stored is
        logged and skipped (``_store_snapshot``): the commands succeeded, their events are
        stored, and the next interval takes one."""
        try:
            snapshot = self._snapshot_of(account, first_version)
        except Exception:
            log.exception("the snapshot of account %s at version %d was not taken", user_id, account.version)
            return
        self._store_snapshot(snapshot)

    # ------------------------------------------------------------------------ the account
    def _current(self, user_id: UUID, news: StreamNews | None) -> Account | None:
        """The account as stored: the one in memory brought up to date (by ``news`` when they
        start where it is, else by a read), or loaded; None when the user has none."""
        account = self._cached(user_id)
        if account is None:
            if news is not None and news.after == FROM_SNAPSHOT:
                account = self._built(user_id, news)
            else:
                account = self._load(user_id)
            if account is not None:
                self._keep(user_id, account)
            return account
        if news is not None and news.after == account.version:
            events: Sequence[StoredEvent] = news.events
        else:
            events = self.app.recorder.select_events(user_id, gt=account.version)
        try:
            return self._advanced(account, events)
        except BaseException:
            self._drop(user_id)
            raise

    def _advanced(self, account: Account | None, events: Sequence[StoredEvent]) -> Account | None:
        """``account`` with ``events`` (the next ones of its stream) applied, in place."""
        for stored in events:
            event: Any = self.app.mapper.to_domain_event(stored)
            account = event.mutate(account)
        return account

    def _built(self, user_id: UUID, news: StreamNews) -> Account | None:
        """The account from the caller's read of its newest snapshot and the events after it
        (what ``repository.get`` reads in two statements of its own)."""
        started = self.monotonic()
        account: Account | None = None
        if news.snapshot is not None:
            if self.app.snapshots is None:  # a snapshot this store cannot decode: read for itself
                return self._load(user_id)
            snapshot: Any = self.app.snapshots.mapper.to_domain_event(news.snapshot)
            account = snapshot.mutate(None)
        account = self._advanced(account, news.events)
        self._timed_load(user_id, started)
        return account

    def _load(self, user_id: UUID) -> Account | None:
        started = self.monotonic()
        try:
            account: Account = self.app.repository.get(user_id)
        except AggregateNotFoundError:
            return None
        self._timed_load(user_id, started)
        return account

    @staticmethod
    def _opened(user_id: UUID, now: datetime, create: bool) -> Account:
        if not create:
            raise AccountNotFound(user_id)
        return Account.open(user_id, now)

    def _decide(self, user_id: UUID, account: Account, decide: Decision[T], now: datetime) -> T:
        try:
            return decide(account, now)
        except BaseException:
            if account.pending_events:  # a decision that failed half way
                self._drop(user_id)
            raise

    def _cached(self, user_id: UUID) -> Account | None:
        try:
            return self.cache.get(user_id)
        except KeyError:
            return None

    def _lock(self, user_id: UUID) -> threading.Lock:
        return self._locks[user_id.int % self.LOCK_STRIPES]

    def _keep(self, user_id: UUID, account: Account) -> None:
        self.cache.put(user_id, account)
        self._dropped.discard(user_id)

    def _drop(self, user_id: UUID) -> None:
        """Forget the account in memory and the appends it was trusted with."""
        self._tails.pop(user_id, None)
        with contextlib.suppress(KeyError):
            self.cache.get(user_id, evict=True)
        if len(self._dropped) >= self.CONTENTION_MEMORY:
            self._dropped.clear()  # rare: they are then built from news, as any user not held
        self._dropped.add(user_id)

    # ------------------------------------------------------------------------ appends
    def _trusted_tail(self, user_id: UUID) -> tuple[Append, int] | None:
        """The user's newest append still being written, or None. An append that failed
        leaves an account in memory holding events never saved: it is dropped."""
        entry = self._tails.get(user_id)
        if entry is None or not entry[0].done:
            return entry
        del self._tails[user_id]
        if entry[0].failed:
            self._drop(user_id)
        return None

    def _submit(self, user_id: UUID, account: Account, tail: tuple[Append, int] | None) -> Submitted:
        """Submit the account's new events after the user's appends in flight (``tail``),
        and the account's snapshot when one is due (stored once they are written)."""
        try:
            events = account.collect_events()
            stored = [self.app.mapper.to_stored_event(event) for event in events]
            snapshot = self._snapshot_of(account, events[0].originator_version)
        except BaseException:
            self._drop(user_id)
            raise
        self._keep(user_id, account)
        chain = next(self._chains) if tail is None else tail[1]
        append = self.writer.submit(stored, after=None if tail is None else tail[0])
        self._tails[user_id] = (append, chain)
        return snapshot, append, chain

    def _finish(
        self, user_id: UUID, value: T, snapshot: StoredEvent | None, append: Append, chain: int
    ) -> CommandResult[T]:
        """Wait for the submitted append to be written, then answer (outside the user's lock)."""
        try:
            ids = append.result()
        except BaseException:
            with self._lock(user_id):
                entry = self._tails.get(user_id)
                if entry is not None and entry[1] == chain:  # the account in memory holds it
                    self._drop(user_id)
            raise
        with self._lock(user_id):
            entry = self._tails.get(user_id)
            if entry is not None and entry[0] is append:
                del self._tails[user_id]
        self._store_snapshot(snapshot)
        return CommandResult(value, max(ids))

    # ------------------------------------------------------------------------ snapshots
    def _snapshot_of(self, account: Account, first_version: int) -> StoredEvent | None:
        """The account's snapshot, encoded, when the events just decided (``first_version``
        to its version) reach a multiple of its snapshot interval; else None."""
        snapshots = self.app.snapshots
        if snapshots is None:
            return None
        interval = snapshot_interval_for(self.app.options.snapshot_interval, account.entries)
        if account.version // interval == (first_version - 1) // interval:
            return None
        stored: StoredEvent = snapshots.mapper.to_stored_event(Account.Snapshot.take(account))
        return stored

    def _store_snapshot(self, stored: StoredEvent | None) -> None:
        """Store a snapshot whose events are committed. One that cannot be stored (the
        database failed) is logged and skipped: the command succeeded, and telling its caller
        otherwise would invite an order again; the next interval takes one."""
        if stored is None or self.app.snapshots is None:
            return
        try:
            self.app.snapshots.recorder.insert_events([stored])
        except IntegrityError:
            pass  # another process stored that version
        except Exception:
            log.exception(
                "the snapshot of account %s at version %d was not stored",
                stored.originator_id,
                stored.originator_version,
            )


def postgres_account_store(max_batch: int, contention_window_s: float) -> Any:
    """The store factory ``LedgerApplication`` takes, on the application's own connection pool."""

    def build(app: LedgerApplication) -> PostgresAccountStore:
        datastore = app.recorder.datastore  # type: ignore[attr-defined]
        writer = GroupCommitWriter(datastore.get_connection, max_batch)
        return PostgresAccountStore(app, writer, contention_window_s)

    return build
