"""Group commit of ledger appends on real PostgreSQL: concurrent commands share transactions,
a command that collides on its stream version fails alone, and nothing is lost or doubled."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from infra.account_store import PostgresAccountStore
from infra.group_commit import Append, GroupCommitWriter, PredecessorFailed, StreamMoved
from ledger.account import Account
from ledger.application import LedgerApplication
from tests.factories import job_request, ledger_events, new_user
from tests.ledger.test_concurrency import assert_stream_intact
from tests.ledger.test_pipelining import Gate, in_thread
from tests.pipeline.conftest import wait_until


def group(ledger: LedgerApplication) -> GroupCommitWriter:
    store = ledger.store
    assert isinstance(store, PostgresAccountStore)
    return store.writer


def test_concurrent_commands_of_many_users_share_transactions(
    pg_ledger: LedgerApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    cost = pg_ledger.policy.cost("image")
    users = [new_user(pg_ledger, credits=3 * cost) for _ in range(16)]
    recorder = group(pg_ledger)
    batches, appends = recorder.batches, recorder.appends
    gate = Gate(pg_ledger, monkeypatch)
    first = in_thread(lambda: pg_ledger.request_job(users[0], uuid4(), "image", job_request()))
    assert gate.holding.wait(timeout=30)
    calls = [
        lambda user=user: pg_ledger.request_job(user, uuid4(), "image", job_request())
        for user in users
        for _ in range(3)
    ][1:]
    threads = [in_thread(call) for call in calls]
    wait_until(lambda: len(recorder._queue) == 47, what="the appends queued behind the first")
    gate.open.set()
    for thread, _ in [first, *threads]:
        thread.join(timeout=60)
    results = [out[0] for _, out in [first, *threads]]
    assert not [r for r in results if isinstance(r, BaseException)]
    assert recorder.appends - appends == 48
    assert recorder.batches - batches == 2  # the first, then the 47 queued behind it together
    positions = [r.position for r in results if not isinstance(r, BaseException)]
    assert len(set(positions)) == 48
    for user in users:
        events = assert_stream_intact(pg_ledger, user)
        assert sum(isinstance(e, Account.JobRequested) for e in events) == 3
        assert pg_ledger.account(user).credits == 0


def stored(ledger: LedgerApplication, user: UUID, version: int) -> StoredEvent:
    """A copy of the user's stored event at ``version``, as a new append would carry it."""
    event = next(e for e in ledger_events(ledger, user) if e.originator_version == version)
    return ledger.mapper.to_stored_event(event)


def next_events(ledger: LedgerApplication, user: UUID) -> list[StoredEvent]:
    """The stored events of a job request on the user's account, not yet written."""
    account = ledger.account(user)
    account.request_job(uuid4(), "image", job_request(), ledger.policy, ledger.clock(), None, timedelta(1))
    return [ledger.mapper.to_stored_event(e) for e in account.collect_events()]


def test_a_batch_with_a_collision_writes_the_others_and_fails_only_the_collider(
    pg_ledger: LedgerApplication,
) -> None:
    cost = pg_ledger.policy.cost("image")
    first, second, third = (new_user(pg_ledger, credits=5 * cost) for _ in range(3))
    recorder = group(pg_ledger)
    taken = stored(pg_ledger, second, 1)  # version 1 of ``second`` exists: it collides
    before = len(ledger_events(pg_ledger, second))
    batch = [Append(next_events(pg_ledger, first)), Append([taken]), Append(next_events(pg_ledger, third))]
    recorder._write(batch)
    assert isinstance(batch[1].error, StreamMoved)
    assert isinstance(batch[1].error, IntegrityError)
    with pytest.raises(IntegrityError):
        batch[1].result()
    for append, user in ((batch[0], first), (batch[2], third)):
        ids = append.result()
        assert ids is not None and len(ids) == len(append.events)
        events = assert_stream_intact(pg_ledger, user)
        assert sum(isinstance(e, Account.JobRequested) for e in events) == 1
    assert len(ledger_events(pg_ledger, second)) == before  # nothing appended for the collider


def test_a_database_failure_fails_every_command_of_the_batch(pg_ledger: LedgerApplication) -> None:
    users = [new_user(pg_ledger, credits=5) for _ in range(2)]
    recorder = group(pg_ledger)
    batch = [Append(next_events(pg_ledger, user)) for user in users]
    pg_ledger.recorder.datastore.pool.close()  # type: ignore[attr-defined]
    recorder._write(batch)
    assert all(append.done and append.error is not None for append in batch)


def following(ledger: LedgerApplication, user: UUID, first: list[StoredEvent]) -> list[StoredEvent]:
    """The stored events of a second job request, decided after ``first`` (not yet written)."""
    account = ledger.account(user)
    when = ledger.clock()
    for _ in range(2):
        account.request_job(uuid4(), "image", job_request(), ledger.policy, when, None, timedelta(1))
    events = [ledger.mapper.to_stored_event(e) for e in account.collect_events()]
    assert events[0].originator_version == first[0].originator_version
    return events[len(first) :]


def test_an_append_after_a_collider_in_its_batch_is_not_written(pg_ledger: LedgerApplication) -> None:
    cost = pg_ledger.policy.cost("image")
    user, other = (new_user(pg_ledger, credits=5 * cost) for _ in range(2))
    recorder = group(pg_ledger)
    before = len(ledger_events(pg_ledger, user))
    colliding = [stored(pg_ledger, user, before)]  # its version exists: it collides
    mine = next_events(pg_ledger, user)
    follower = following(pg_ledger, user, mine)
    first = Append(colliding)
    batch = [first, Append(follower, after=first), Append(next_events(pg_ledger, other))]
    recorder._write(batch)
    assert isinstance(batch[0].error, IntegrityError)
    assert isinstance(batch[1].error, PredecessorFailed)  # retried by the ledger as a conflict
    assert isinstance(batch[1].error, IntegrityError)
    assert batch[2].result()  # an unrelated append of the batch is written
    assert len(ledger_events(pg_ledger, user)) == before  # no gap: the follower was not written
    assert_stream_intact(pg_ledger, user)


def test_an_append_whose_predecessor_failed_in_an_earlier_batch_is_not_written(
    pg_ledger: LedgerApplication,
) -> None:
    cost = pg_ledger.policy.cost("image")
    user = new_user(pg_ledger, credits=5 * cost)
    recorder = group(pg_ledger)
    before = len(ledger_events(pg_ledger, user))
    mine = next_events(pg_ledger, user)
    first = Append([stored(pg_ledger, user, before)])
    recorder._write([first])
    assert first.failed
    written = recorder.batches
    follower = Append(following(pg_ledger, user, mine), after=first)
    recorder._write([follower])
    assert isinstance(follower.error, PredecessorFailed)
    assert recorder.batches == written  # not even a transaction
    assert len(ledger_events(pg_ledger, user)) == before


def test_appends_that_follow_each_other_in_one_batch_commit_together(pg_ledger: LedgerApplication) -> None:
    cost = pg_ledger.policy.cost("image")
    user = new_user(pg_ledger, credits=5 * cost)
    recorder = group(pg_ledger)
    mine = next_events(pg_ledger, user)
    first = recorder.submit(mine)
    second = recorder.submit(following(pg_ledger, user, mine), after=first)
    assert first.result() and second.result()
    events = assert_stream_intact(pg_ledger, user)
    assert sum(isinstance(e, Account.JobRequested) for e in events) == 2
