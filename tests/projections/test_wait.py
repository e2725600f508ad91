"""Read-your-writes from a process without runners: the shared PositionWatcher.

Its fallback poll is set far beyond every deadline here (``NO_POLL_S``): a wait that ends
before its deadline was ended by a NOTIFY, so these tests fail if the LISTEN is gone."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

import projections.tracking
from ledger.application import LedgerApplication
from projections.events import WANTED_CHANNEL
from projections.runner import Projector
from projections.wait import Nudge, PositionWatcher
from tests.factories import new_user

NO_POLL_S = 3600.0  # the watcher's fallback poll: never due within a test
DEADLINE_S = 60.0  # a waiter's deadline: far beyond what a NOTIFY takes, far below the poll


def test_watcher_sees_the_runners_commits(pg_url: str, pg_ledger: LedgerApplication) -> None:
    watcher = PositionWatcher(pg_url, ["points", "jobs"], poll_interval=NO_POLL_S).start()
    try:
        user = new_user(pg_ledger, credits=3)
        position = pg_ledger.grant_credits(user, 1, "more").position
        assert position is not None
        assert watcher.wait_for(position, timeout=0.3) is False  # no runner yet: not applied
        with Projector(pg_url, poll_interval=1.0):
            # Positions read once above; only the runners' NOTIFY can tell of their commits.
            assert watcher.wait_for(position, timeout=DEADLINE_S) is True
        assert watcher.position() >= position
        assert watcher.wait_for(None, timeout=0) is True
    finally:
        watcher.stop()


def test_a_watcher_stops_at_once_however_long_its_poll(pg_url: str, pg_ledger: LedgerApplication) -> None:
    """``stop()`` wakes the thread waiting on its LISTEN connection (it used to wait for the
    poll, or give up joining after ``stop_timeout`` and leave the thread running)."""
    watcher = PositionWatcher(pg_url, ["points", "jobs"], poll_interval=NO_POLL_S).start()
    new_user(pg_ledger, credits=1)
    head = pg_ledger.position()
    with Projector(pg_url, poll_interval=1.0):
        assert watcher.wait_for(head, timeout=DEADLINE_S)  # it follows: LISTENing, then waiting
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < watcher.stop_timeout / 2
    assert not watcher.running


def test_a_projection_stuck_in_another_process_ends_the_wait_at_once(
    pg_url: str, pg_ledger: LedgerApplication
) -> None:
    """The runner (here: this process, as the projector process would) names the event it
    cannot apply; an API process waiting for a later position stops waiting right away."""
    watcher = PositionWatcher(pg_url, ["points", "jobs"], poll_interval=NO_POLL_S).start()
    try:
        user = new_user(pg_ledger, credits=3)
        bad = pg_ledger.adjust(user, "credit", 1, "bad\x00reason").position
        later = pg_ledger.adjust(user, "credit", 1, "fine").position
        assert bad is not None and later is not None
        # The watcher reads the positions now, before any runner: none stuck yet. Only a
        # NOTIFY makes it read them again.
        assert watcher.wait_for(bad, timeout=0.3) is False
        with Projector(pg_url, poll_interval=0.2) as projector:
            runner = projector.runner("points")
            assert runner.wait_for(later, timeout=DEADLINE_S) is False  # returns once the event is named
            assert runner.failing is not None and runner.failing.position == bad
            started = time.monotonic()
            assert watcher.wait_for(later, timeout=DEADLINE_S) is False
            assert time.monotonic() - started < DEADLINE_S / 2  # woken by the NOTIFY, not the deadline
            assert watcher.wait_for(bad - 1, timeout=DEADLINE_S) is True  # what came before is there
    finally:
        watcher.stop()


def test_a_commit_wakes_the_waiters_with_its_position_and_no_read(
    pg_url: str, pg_ledger: LedgerApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each commit's notification says the position committed: the waiters take it as it
    is, nobody reads the tracking table (the read happens once, at the start)."""
    reads: list[list[str]] = []
    read = projections.tracking.watched

    def counted(conn: Any, names: list[str]) -> Any:
        reads.append(names)
        return read(conn, names)

    monkeypatch.setattr(projections.tracking, "watched", counted)
    watcher = PositionWatcher(pg_url, ["points", "jobs"], poll_interval=NO_POLL_S).start()
    try:
        user = new_user(pg_ledger, credits=3)
        with Projector(pg_url, poll_interval=1.0) as projector:
            assert projector.wait_for(pg_ledger.position(), timeout=DEADLINE_S)
            assert watcher.wait_for(pg_ledger.position(), timeout=DEADLINE_S) is True
            before = len(reads)
            for n in range(5):
                position = pg_ledger.grant_credits(user, 1, f"grant {n}").position
                assert watcher.wait_for(position, timeout=DEADLINE_S) is True
            assert len(reads) == before
    finally:
        watcher.stop()


@pytest.mark.parametrize(
    ("payload", "notice"),
    [("points:12", ("points", 12)), ("jobs", ("jobs", None)), ("jobs:x", ("jobs", None)), ("", ("", None))],
)
def test_a_tracking_notice(payload: str, notice: tuple[str, int | None]) -> None:
    assert projections.tracking.notice(payload) == notice


def _payloads_until(listener: psycopg.Connection[Any], last: str) -> list[str]:
    """The payloads on ``WANTED_CHANNEL`` up to ``last`` (sent by the test after the rest)."""
    seen: list[str] = []
    deadline = time.monotonic() + 10
    while last not in seen and time.monotonic() < deadline:
        seen += [
            n.payload for n in listener.notifies(timeout=max(0.0, deadline - time.monotonic()), stop_after=1)
        ]
    return seen


@pytest.mark.parametrize(
    ("every", "sent"), [(0.0, ["5", "6"]), (60.0, ["5"])], ids=["at-once", "a-minute-apart"]
)
def test_a_nudge_tells_each_newer_position_once_and_no_more_often_than_asked(
    pg_url: str, every: float, sent: list[str]
) -> None:
    with (
        psycopg.connect(pg_url, autocommit=True) as listener,
        psycopg.connect(pg_url, autocommit=True) as other,
    ):
        listener.execute(f"LISTEN {WANTED_CHANNEL}")
        nudge = Nudge(lambda: psycopg.connect(pg_url, autocommit=True), every)
        for position in (5, 3, 5, 6, 6):
            nudge.want(position)
        other.execute(f"NOTIFY {WANTED_CHANNEL}, 'end'")
        assert _payloads_until(listener, "end") == [*sent, "end"]
        assert nudge.sent == int(sent[-1])


def test_a_nudge_that_cannot_be_sent_is_dropped_and_tried_again_by_the_next_reader(pg_url: str) -> None:
    tries: list[int] = []

    def connect() -> Any:
        tries.append(1)
        if len(tries) == 1:
            raise psycopg.OperationalError("connection refused")
        return psycopg.connect(pg_url, autocommit=True)

    with psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {WANTED_CHANNEL}")
        nudge = Nudge(connect, every=60.0)
        nudge.want(4)  # does not raise: the reader waits as it would have
        assert nudge.sent == 0
        nudge.want(4)
        assert _payloads_until(listener, "4") == ["4"]
        assert len(tries) == 2
