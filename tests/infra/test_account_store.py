"""The fast account store across processes, on real PostgreSQL: an account in memory is
brought up to date before each decision (from the caller's news, or a read of its own), and a
collision is decided again once, under the table lock, so that it can never collide again."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.persistence import OperationalError as PersistenceOperationalError

from infra.account_store import PostgresAccountStore, Turn
from infra.group_commit import GroupCommitWriter
from infra.ledger_store import postgres_ledger
from infra.settings import Settings
from ledger.account import Account
from ledger.application import LedgerApplication, StreamNews
from ledger.errors import InsufficientEntitlement, InvalidAmount
from ledger.store import FROM_SNAPSHOT
from tests.factories import job_request, new_user
from tests.ledger.test_concurrency import assert_stream_intact, kinds, race
from tests.serve_process import wait_until


@pytest.fixture
def two(pg_url: str) -> Iterator[list[LedgerApplication]]:
    """Two ledgers on one database (two API processes), each command given two attempts: the
    optimistic one and the one under the table lock."""
    settings = Settings(_env_file=None, command_max_attempts=2)  # type: ignore[call-arg]
    apps = [postgres_ledger(settings, pg_url) for _ in range(2)]
    yield apps
    for app in apps:
        app.close()


def store(ledger: LedgerApplication) -> PostgresAccountStore:
    assert isinstance(ledger.store, PostgresAccountStore)
    return ledger.store


class Reads:
    """Counts the stream reads a store makes of its own (``select_events``)."""

    def __init__(self, ledger: LedgerApplication, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        recorder = ledger.recorder
        select = recorder.select_events

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return select(*args, **kwargs)

        monkeypatch.setattr(recorder, "select_events", counted)


class Exclusives:
    """Counts the transactions a store makes under the table lock."""

    def __init__(self, writer: GroupCommitWriter, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        exclusive = writer.exclusive

        def counted() -> Any:
            self.count += 1
            return exclusive()

        monkeypatch.setattr(writer, "exclusive", counted)


def news(ledger: LedgerApplication, user: UUID, after: int) -> StreamNews:
    """What the job order's catalog read gives the store: the stream after ``after``."""
    events = [
        StoredEvent(user, e.originator_version, e.topic, e.state)
        for e in ledger.recorder.select_events(user, gt=after)
    ]
    return StreamNews(after, events)


def test_news_from_the_callers_read_spare_the_store_its_own(
    two: list[LedgerApplication], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, other = two
    cost = mine.policy.cost("image")
    user = new_user(mine)  # held in memory by ``mine``, with no credits
    held = mine.known_version(user)
    assert held == mine.account(user).version
    other.grant_credits(user, cost, "granted by another process")
    given = news(other, user, held)
    assert len(given.events) == 1
    reads = Reads(mine, monkeypatch)
    result = mine.request_job(user, uuid4(), "image", job_request(), news=given)
    assert result.value.amount == cost  # decided on the grant the news carried
    assert reads.count == 0
    assert mine.stats.conflicts == 0
    assert_stream_intact(mine, user)


def test_news_that_do_not_start_where_the_account_is_are_not_used(
    two: list[LedgerApplication], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, other = two
    cost = mine.policy.cost("image")
    user = new_user(mine)
    held = mine.known_version(user)
    assert held is not None
    other.grant_credits(user, cost, "granted by another process")
    stale = StreamNews(held - 1, [])  # news of another version: the store reads for itself
    reads = Reads(mine, monkeypatch)
    result = mine.request_job(user, uuid4(), "image", job_request(), news=stale)
    assert result.value.amount == cost
    assert reads.count == 1
    assert mine.stats.conflicts == 0


def test_without_news_the_store_reads_the_stream_and_does_not_collide(two: list[LedgerApplication]) -> None:
    mine, other = two
    cost = mine.policy.cost("image")
    user = new_user(mine, credits=cost)
    mine.request_job(user, uuid4(), "image", job_request())  # ``mine`` holds the account
    other.grant_credits(user, cost, "granted by another process")
    mine.request_job(user, uuid4(), "image", job_request())  # decided on the grant it read
    assert (mine.stats.conflicts, other.stats.conflicts) == (0, 0)
    assert mine.account(user).credits == 0


def test_a_collision_is_decided_again_once_under_the_table_lock(
    two: list[LedgerApplication], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, other = two
    cost = mine.policy.cost("image")
    user = new_user(mine, credits=2 * cost)
    exclusives = Exclusives(store(mine).writer, monkeypatch)
    # Another process appends between ``mine``'s read of the stream and its append.
    read = mine.recorder.select_events

    def read_then_other_writes(*args: Any, **kwargs: Any) -> Any:
        found = read(*args, **kwargs)
        monkeypatch.setattr(mine.recorder, "select_events", read)
        other.grant_credits(user, cost, "granted meanwhile")
        return found

    monkeypatch.setattr(mine.recorder, "select_events", read_then_other_writes)
    result = mine.request_job(user, uuid4(), "image", job_request())
    assert result.value.created
    assert (mine.stats.conflicts, exclusives.count) == (1, 1)
    events = assert_stream_intact(mine, user)
    assert sum(isinstance(e, Account.CreditsGranted) for e in events) == 2
    assert mine.account(user).credits == 2 * cost


def test_a_user_not_held_gets_news_from_the_snapshot_but_not_while_colliding(
    two: list[LedgerApplication], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user this process holds nothing of asks the caller for the whole account
    (``FROM_SNAPSHOT``); one whose account was dropped after a collision does not: the
    concurrent orders of a user busy on several processes would each read all of it."""
    mine, other = two
    cost = mine.policy.cost("image")
    user = new_user(other, credits=2 * cost)
    assert mine.known_version(user) == FROM_SNAPSHOT
    mine.account(user)
    seen: list[int | None] = []
    exclusive = store(mine).writer.exclusive

    def noted() -> Any:
        seen.append(mine.known_version(user))
        return exclusive()

    monkeypatch.setattr(store(mine).writer, "exclusive", noted)
    other.grant_credits(user, cost, "granted by another process")
    # ``mine`` decides without news (it reads nothing first, the account in memory is stale):
    # the append collides, the account is dropped, and the order is decided under the lock.
    monkeypatch.setattr(mine.recorder, "select_events", lambda *args, **kwargs: [])
    monkeypatch.setattr(store(mine), "_current", lambda user_id, news: store(mine)._cached(user_id))
    result = mine.request_job(user, uuid4(), "image", job_request())
    assert result.value.created
    assert mine.stats.conflicts == 1
    assert seen == [None]
    monkeypatch.undo()
    assert mine.known_version(user) == mine.account(user).version


def test_a_hot_user_on_two_processes_is_served_with_one_retry_at_most(two: list[LedgerApplication]) -> None:
    """64 racing orders of one user spread over two processes, each allowed one retry: every
    one is accepted, charged once, and the stream has no gap."""
    first = two[0]
    cost = first.policy.cost("image")
    user = new_user(first, credits=64 * cost)
    for app in two:
        app.account(user)  # both hold the account
    results = race(
        [lambda i=i: two[i % 2].request_job(user, uuid4(), "image", job_request()) for i in range(64)]
    )
    assert kinds(results) == {"CommandResult": 64}, results
    assert sum(app.stats.exhausted for app in two) == 0
    events = assert_stream_intact(first, user)
    reserved = [e for e in events if isinstance(e, Account.EntitlementReserved)]
    assert len(reserved) == len({e.job_id for e in reserved}) == 64
    for app in two:
        assert app.account(user).credits == 0


def test_the_commands_of_a_contended_user_share_transactions_under_the_lock(
    two: list[LedgerApplication], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = two[0]
    cost = mine.policy.cost("image")
    user = new_user(mine, credits=20 * cost)
    exclusives = Exclusives(store(mine).writer, monkeypatch)
    store(mine)._contend(user)  # as after a collision: decided under the lock, in turns
    results = race([lambda: mine.request_job(user, uuid4(), "image", job_request()) for _ in range(20)])
    assert kinds(results) == {"CommandResult": 20}, results
    assert mine.stats.conflicts == 0
    assert 1 <= exclusives.count < 20  # turns queued meanwhile were decided together
    positions = [r.position for r in results if not isinstance(r, BaseException)]
    assert len(set(positions)) == 20
    assert_stream_intact(mine, user)
    assert mine.account(user).credits == 0


def turn(decide: Any) -> Turn:
    return Turn(decide, create=False)


def test_turns_are_answered_in_order_once_committed(two: list[LedgerApplication]) -> None:
    mine = two[0]
    cost = mine.policy.cost("image")
    user = new_user(mine, credits=cost)
    request = job_request()
    first, refused, granted = (
        turn(lambda a, now: a.request_job(uuid4(), "image", request, mine.policy, now, None, timedelta(1))),
        turn(lambda a, now: a.request_job(uuid4(), "image", request, mine.policy, now, None, timedelta(1))),
        turn(lambda a, now: a.grant_credits(3, "granted in the same turn", now)),
    )
    store(mine)._take_turns(user, [first, refused, granted])
    assert first.outcome().value.amount == cost
    with pytest.raises(InsufficientEntitlement):  # the first took the credits
        refused.outcome()
    assert granted.outcome().position > first.outcome().position
    events = assert_stream_intact(mine, user)
    assert sum(isinstance(e, Account.EntitlementReserved) for e in events) == 1
    assert mine.account(user).credits == 3


def test_a_decision_that_fails_half_way_abandons_its_turns(two: list[LedgerApplication]) -> None:
    mine = two[0]
    user = new_user(mine, credits=5)
    before = len(assert_stream_intact(mine, user))

    def half_way(account: Account, now: Any) -> None:
        account.grant_credits(1, "triggered", now)
        raise InvalidAmount("then refused")

    ok, culprit, later = (
        turn(lambda a, now: a.grant_credits(1, "ok", now)),
        turn(half_way),
        turn(lambda a, now: a.grant_credits(2, "later", now)),
    )
    store(mine)._take_turns(user, [ok, culprit, later])
    with pytest.raises(InvalidAmount):
        culprit.outcome()
    for other in (ok, later):  # decided again by their commands (a conflict to retry)
        with pytest.raises(IntegrityError):
            other.outcome()
    assert len(assert_stream_intact(mine, user)) == before  # nothing appended
    assert mine.account(user).credits == 5


def hold_first_transaction(
    fast: PostgresAccountStore, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[int], threading.Event]:
    """Record the number of turns of each transaction under the lock, and hold the first one
    until the returned event is set."""
    batches: list[int] = []
    release = threading.Event()
    take = fast._take_turns

    def counted(user_id: UUID, turns: list[Turn]) -> None:
        batches.append(len(turns))
        if len(batches) == 1:
            assert release.wait(30)
        take(user_id, turns)

    monkeypatch.setattr(fast, "_take_turns", counted)
    return batches, release


def grant(account: Account, now: Any) -> None:
    account.grant_credits(1, "granted under the lock", now)


def test_turns_queued_behind_the_users_transaction_are_decided_in_the_next_one(
    two: list[LedgerApplication], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One transaction under the lock per user and process at a time: the user's commands that
    come while it runs wait (holding no connection) and are decided together in the next."""
    mine = two[0]
    user = new_user(mine, credits=0)
    fast = store(mine)
    batches, release = hold_first_transaction(fast, monkeypatch)

    commands = [threading.Thread(target=fast._exclusive, args=(user, grant, False)) for _ in range(5)]
    commands[0].start()
    wait_until(lambda: batches == [1], 30, "the first transaction")
    for command in commands[1:]:
        command.start()
    wait_until(lambda: len(fast._turns.get(user, [])) == 4, 30, "four turns queued")
    release.set()
    for command in commands:
        command.join(30)
    assert batches == [1, 4]
    assert user not in fast._turns  # the queue ends with its last transaction
    assert mine.account(user).credits == 5
    assert_stream_intact(mine, user)


def test_an_optimistic_command_joins_the_users_turns_instead_of_deciding_beside_them(
    two: list[LedgerApplication], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a transaction under the lock decides a user's turns (outside the user's lock), the
    account in memory is its own: a command of the same user that would go the optimistic way
    joins the queue, and ``account`` loads the account afresh."""
    mine = two[0]
    user = new_user(mine, credits=0)
    fast = store(mine)
    batches, release = hold_first_transaction(fast, monkeypatch)

    under_lock = threading.Thread(target=fast._exclusive, args=(user, grant, False))
    under_lock.start()
    wait_until(lambda: batches == [1], 30, "the transaction under the lock")
    optimistic = threading.Thread(target=fast.execute, args=(user, grant), kwargs={"create": False})
    optimistic.start()
    wait_until(lambda: len(fast._turns.get(user, [])) == 1, 30, "the optimistic command queued")
    assert fast.account(user).credits == 0  # loaded afresh: nothing committed yet
    release.set()
    under_lock.join(30)
    optimistic.join(30)
    assert batches == [1, 1]
    assert mine.account(user).credits == 2
    assert_stream_intact(mine, user)


def test_a_user_stays_under_the_lock_while_another_process_keeps_writing_it(
    two: list[LedgerApplication],
) -> None:
    """A transaction under the lock that finds another process's events extends the user's
    contention window (an optimistic attempt would collide and drop the account); one that
    finds none leaves it to expire."""
    mine, other = two
    cost = mine.policy.cost("image")
    user = new_user(mine, credits=2 * cost)
    mine.account(user)
    fast = store(mine)
    fast._contend(user)  # as after a collision
    until = fast._contention[user]
    other.grant_credits(user, cost, "granted by another process")
    assert mine.request_job(user, uuid4(), "image", job_request()).value.created
    assert mine.stats.conflicts == 0  # decided under the lock, where nothing collides
    extended = fast._contention[user]
    assert extended > until
    assert mine.request_job(user, uuid4(), "image", job_request()).value.created
    assert fast._contention[user] == extended  # nobody else wrote: the window runs out
    assert mine.account(user).credits == cost  # two granted, one granted meanwhile, two spent
    assert_stream_intact(mine, user)


def test_a_user_whose_account_loads_slowly_stays_under_the_lock_twice_as_long(
    two: list[LedgerApplication], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a collision, a user whose account took this process 3 s to load is decided under
    the lock for 6 s, not the 1 s setting: the other process may be loading it that long, and
    an optimistic attempt meanwhile would collide with its return and drop the account again.
    A quick load leaves the window as set."""
    mine = two[0]
    fast = store(mine)
    slow, quick = new_user(mine, credits=1), new_user(mine, credits=1)
    now = [1000.0]
    fast.monotonic = lambda: now[0]
    get = mine.repository.get

    def slow_get(user: UUID, *args: Any, **kwargs: Any) -> Any:
        if user == slow:
            now[0] += 3.0  # as a big account's snapshot and events would take
        return get(user, *args, **kwargs)

    monkeypatch.setattr(mine.repository, "get", slow_get)
    for user in (slow, quick):
        fast._drop(user)
        assert mine.account(user).credits == 1  # loaded by the store: timed
    assert fast.contention_window(quick) == fast.contention_window_s == 1.0
    assert fast.contention_window(slow) == 6.0
    fast._contend(slow)  # as after a collision
    fast._contend(quick)
    now[0] += 5.0
    assert fast._contended(slow) and not fast._contended(quick)
    now[0] += 1.5
    assert not fast._contended(slow)
    assert mine.request_job(slow, uuid4(), "image", job_request()).value.created


def test_a_slow_load_lengthens_the_window_only_up_to_its_bound_and_never_a_zero_one(pg_url: str) -> None:
    settings = Settings(_env_file=None, ledger_contention_window_s=0.0)  # type: ignore[call-arg]
    never, usual = postgres_ledger(settings, pg_url), postgres_ledger(Settings(_env_file=None), pg_url)  # type: ignore[call-arg]
    try:
        user = uuid4()
        for ledger in (never, usual):
            fast = store(ledger)
            fast._load_seconds[user] = 3600.0
        assert store(never).contention_window(user) == 0.0
        assert store(usual).contention_window(user) == PostgresAccountStore.CONTENTION_WINDOW_MAX_S
    finally:
        never.close()
        usual.close()


def test_turns_take_their_snapshot_after_their_transaction_not_under_the_lock(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot is encoded after the transaction under the table lock has committed (the
    lock every process's appends wait for), and stored; one that cannot be taken is logged and
    the command still succeeds."""
    settings = Settings(_env_file=None, snapshot_interval=1)  # type: ignore[call-arg]
    mine = postgres_ledger(settings, pg_url)
    try:
        fast = store(mine)
        user = new_user(mine, credits=2 * mine.policy.cost("image"))
        locked = [False]
        exclusive = fast.writer.exclusive

        @contextlib.contextmanager
        def watched() -> Iterator[Any]:
            with exclusive() as tx:
                locked[0] = True
                try:
                    yield tx
                finally:
                    locked[0] = False

        monkeypatch.setattr(fast.writer, "exclusive", watched)
        taken: list[bool] = []
        snapshot_of = fast._snapshot_of

        def recorded(account: Account, first_version: int) -> StoredEvent | None:
            taken.append(locked[0])
            return snapshot_of(account, first_version)

        monkeypatch.setattr(fast, "_snapshot_of", recorded)
        fast.monotonic = lambda: 1000.0  # the window never runs out
        fast._contend(user)  # decided in turns under the lock
        result = mine.request_job(user, uuid4(), "image", job_request())
        assert result.value.created and taken == [False]
        assert mine.snapshots is not None
        stored = mine.snapshots.recorder.select_events(user, desc=True, limit=1)
        assert [s.originator_version for s in stored] == [mine.account(user).version]

        def broken(account: Account, first_version: int) -> StoredEvent | None:
            raise RuntimeError("cannot encode")

        monkeypatch.setattr(fast, "_snapshot_of", broken)
        with caplog.at_level(logging.ERROR, logger="infra.account_store"):
            assert mine.request_job(user, uuid4(), "image", job_request()).value.created
        assert [r.getMessage() for r in caplog.records] == [
            f"the snapshot of account {user} at version {mine.account(user).version} was not taken"
        ]
        assert mine.account(user).credits == 0
        assert_stream_intact(mine, user)
    finally:
        mine.close()


def test_a_snapshot_the_database_refuses_leaves_the_command_accepted(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The snapshot is stored once the command's events are committed, optimistic or in turns:
    a database failure then is logged, and the command is still answered as accepted (an error
    would invite its caller to order again)."""
    settings = Settings(_env_file=None, snapshot_interval=1)  # type: ignore[call-arg]
    mine = postgres_ledger(settings, pg_url)
    try:
        fast = store(mine)
        user = new_user(mine, credits=8 * mine.policy.cost("image"))
        assert mine.snapshots is not None

        def refused(events: Any, **kwargs: Any) -> Any:
            raise PersistenceOperationalError("the database went away")

        monkeypatch.setattr(mine.snapshots.recorder, "insert_events", refused)
        with caplog.at_level(logging.ERROR, logger="infra.account_store"):
            assert mine.request_job(user, uuid4(), "image", job_request()).value.created  # optimistic
            optimistic = mine.account(user).version
            fast.monotonic = lambda: 1000.0
            fast._contend(user)  # the rest in turns, until one is due a snapshot
            for _ in range(7):
                assert mine.request_job(user, uuid4(), "image", job_request()).value.created
        assert_stream_intact(mine, user)
        logged = [r.getMessage() for r in caplog.records]
        assert logged[0] == f"the snapshot of account {user} at version {optimistic} was not stored"
        assert len(logged) >= 2 and all(m.endswith("was not stored") for m in logged), logged
        assert mine.account(user).credits == 0
    finally:
        mine.close()
