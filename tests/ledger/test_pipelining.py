"""Pipelined appends of one user on real PostgreSQL: the commands of one user share commits,
and a failure in the middle of a chain of appends in flight never leaves a gap, a lost
command or a double charge (every command behind it is decided again)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from uuid import UUID, uuid4

import pytest

from infra.account_store import PostgresAccountStore
from infra.group_commit import GroupCommitWriter
from infra.ledger_store import postgres_ledger
from infra.settings import Settings
from ledger.account import Account
from ledger.application import CommandResult, LedgerApplication
from tests.factories import job_request, new_user
from tests.ledger.test_concurrency import assert_stream_intact, kinds
from tests.pipeline.conftest import wait_until


def group(ledger: LedgerApplication) -> GroupCommitWriter:
    store = ledger.store
    assert isinstance(store, PostgresAccountStore)
    return store.writer


class Gate:
    """Holds the first batch a ledger writes until released (the appends submitted meanwhile
    queue behind it)."""

    def __init__(self, ledger: LedgerApplication, monkeypatch: pytest.MonkeyPatch) -> None:
        writer = group(ledger)
        self.append = writer._append
        self.open = threading.Event()
        self.holding = threading.Event()
        self.used = False
        monkeypatch.setattr(writer, "_append", self.gated)

    def gated(self, events: Sequence[Any]) -> Any:
        if not self.used:
            self.used = True
            self.holding.set()
            assert self.open.wait(timeout=60)
        return self.append(list(events))


@pytest.fixture
def other(pg_url: str, settings: Settings) -> Iterator[LedgerApplication]:
    """A second ledger on the same database: another API process."""
    app = postgres_ledger(settings, pg_url)
    yield app
    app.close()


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except Exception as exc:  # noqa: BLE001 - asserted on by the test
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_commands_of_one_user_share_commits(
    pg_ledger: LedgerApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    cost = pg_ledger.policy.cost("image")
    user = new_user(pg_ledger, credits=40 * cost)
    recorder = group(pg_ledger)
    batches, appends = recorder.batches, recorder.appends
    gate = Gate(pg_ledger, monkeypatch)
    order = lambda: pg_ledger.request_job(user, uuid4(), "image", job_request())  # noqa: E731
    first = in_thread(order)
    assert gate.holding.wait(timeout=30)
    queued = [in_thread(order) for _ in range(39)]  # decided on the first, pipelined behind it
    wait_until(lambda: len(recorder._queue) == 39, what="the appends queued behind the first")
    gate.open.set()
    for thread, _ in [first, *queued]:
        thread.join(timeout=60)
    results = [out[0] for _, out in [first, *queued]]
    assert kinds(results) == {"CommandResult": 40}
    assert recorder.appends - appends == 40
    assert recorder.batches - batches == 2  # the first, then the 39 queued behind it together
    positions = [r.position for r in results if isinstance(r, CommandResult)]
    assert len(set(positions)) == 40
    events = assert_stream_intact(pg_ledger, user)
    assert sum(isinstance(e, Account.JobRequested) for e in events) == 40
    assert pg_ledger.account(user).credits == 0


def test_a_collision_under_a_chain_in_flight_redecides_every_command_behind_it(
    pg_ledger: LedgerApplication, other: LedgerApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    cost = pg_ledger.policy.cost("image")
    user = new_user(pg_ledger, credits=11 * cost)
    gate = Gate(pg_ledger, monkeypatch)
    first = in_thread(lambda: pg_ledger.request_job(user, uuid4(), "image", job_request()))
    assert gate.holding.wait(timeout=30)
    order = lambda: pg_ledger.request_job(user, uuid4(), "image", job_request())  # noqa: E731
    queued = [in_thread(order) for _ in range(10)]
    wait_until(lambda: len(group(pg_ledger)._queue) == 10, what="the appends queued behind the first")
    other.grant_credits(user, 2 * cost, "granted by another process")  # takes the next version
    gate.open.set()
    for thread, _ in [first, *queued]:
        thread.join(timeout=60)
    results = [out[0] for _, out in [first, *queued]]
    assert kinds(results) == {"CommandResult": 11}, results
    assert pg_ledger.stats.conflicts == 11  # the first collided; those behind it were not written
    events = assert_stream_intact(pg_ledger, user)  # no gap, nothing written twice
    assert sum(isinstance(e, Account.JobRequested) for e in events) == 11
    assert sum(isinstance(e, Account.CreditsGranted) for e in events) == 2
    for app in (pg_ledger, other):
        assert app.account(user).credits == 2 * cost


def test_a_refusal_behind_appends_in_flight_waits_for_them(
    pg_ledger: LedgerApplication, other: LedgerApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    cost = pg_ledger.policy.cost("image")
    user = new_user(pg_ledger, credits=cost)
    gate = Gate(pg_ledger, monkeypatch)
    first = in_thread(lambda: pg_ledger.request_job(user, uuid4(), "image", job_request()))
    assert gate.holding.wait(timeout=30)
    clock, decisions = pg_ledger.clock, []

    def counted() -> Any:
        decisions.append(1)
        return clock()

    monkeypatch.setattr(pg_ledger, "clock", counted)
    # Decided on the account with the first job reserved: nothing left to pay, for now.
    second = in_thread(lambda: pg_ledger.request_job(user, uuid4(), "image", job_request()))
    wait_until(lambda: decisions, what="the second command to decide")
    other.grant_credits(user, cost, "granted by another process")  # the first collides on it
    gate.open.set()
    for thread, _ in (first, second):
        thread.join(timeout=60)
    results = [first[1][0], second[1][0]]
    assert kinds(results) == {"CommandResult": 2}, results  # the refusal was not answered early
    events = assert_stream_intact(pg_ledger, user)
    assert sum(isinstance(e, Account.JobRequested) for e in events) == 2
    assert pg_ledger.account(user).credits == 0


def replayed(ledger: LedgerApplication, user: UUID, version: int) -> Account:
    """The account at ``version`` from its events alone (no snapshot)."""
    account: Any = None
    for event in ledger.events.get(user, lte=version):
        account = event.mutate(account)
    assert isinstance(account, Account)
    return account


def test_a_snapshot_decided_in_a_chain_that_failed_is_not_stored(
    pg_url: str, other: LedgerApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = postgres_ledger(Settings(_env_file=None, snapshot_interval=4), pg_url)  # type: ignore[call-arg]
    try:
        cost = ledger.policy.cost("image")
        user = new_user(ledger, credits=6 * cost)  # versions 1 and 2
        other.account(user)  # the other process holds the account at version 2
        gate = Gate(ledger, monkeypatch)
        first = in_thread(lambda: ledger.request_job(user, uuid4(), "image", job_request()))
        assert gate.holding.wait(timeout=30)
        order = lambda: ledger.request_job(user, uuid4(), "image", job_request())  # noqa: E731
        queued = [in_thread(order) for _ in range(5)]  # decided up to version 14: snapshots due
        wait_until(lambda: len(group(ledger)._queue) == 5, what="the appends queued behind the first")
        other.grant_credits(user, cost, "granted by another process")  # version 3: the chain fails
        gate.open.set()
        for thread, _ in [first, *queued]:
            thread.join(timeout=60)
        assert kinds([out[0] for _, out in [first, *queued]]) == {"CommandResult": 6}
        assert ledger.snapshots is not None
        snapshots = list(ledger.snapshots.get(user))
        assert snapshots  # taken again by the commands decided anew
        for snapshot in snapshots:  # each is the state its events made, none a failed decision's
            stored = snapshot.mutate(None)
            expected = replayed(ledger, user, snapshot.originator_version)
            assert (stored.version, stored.credits, stored.jobs) == (
                expected.version,
                expected.credits,
                expected.jobs,
            )
        assert_stream_intact(ledger, user)
    finally:
        ledger.close()
