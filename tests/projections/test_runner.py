"""Runners on real PostgreSQL: the read models' contents, exactly-once across a crash and a
duplicate delivery, restart, LISTEN and the poll fallback, read-your-writes, lag."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import Mapper, StoredEvent

import projections.runner
import projections.tracking
from infra.ledger_store import postgres_ledger
from infra.settings import Settings
from ledger.application import LedgerApplication, event_transcoder
from projections.events import (
    CHANNEL,
    READERS_HEARD_S,
    WANTED_CHANNEL,
    decode,
    ledger_mapper,
    select_after,
    wake,
    wake_channel,
)
from projections.jobs import JobsProjection
from projections.lag import lag
from projections.points import PointsProjection
from projections.rebuild import rebuild
from projections.registry import all_projections
from projections.runner import Pace, ProjectionRunner, Projector, Readers, idle
from projections.tracking import failing as tracking_failing
from projections.wait import Nudge
from tests.conftest import FakeClock
from tests.factories import job_request, new_user
from tests.projections.helpers import dump, forget, one, projected_history, tracking, wait_for_position
from tests.projections.history import random_history

BALANCE_SQL = "SELECT %s FROM point_balance WHERE user_id = %%s"


class Crash(Exception):
    pass


def _outputs(kind: str = "image") -> list[dict[str, object]]:
    media = "video/mp4" if kind == "video" else "image/png"
    return [{"storage_key": f"out/{uuid4()}", "media_type": media, "width": 768, "height": 1024, "size": 123}]


def test_read_models_follow_every_kind_of_event(pg_url: str, pg_ledger: LedgerApplication) -> None:
    user = new_user(pg_ledger, credits=10, lookbook=1)
    project = str(uuid4())
    by_ticket, by_credit, failed, canceled = uuid4(), uuid4(), uuid4(), uuid4()
    pg_ledger.request_job(user, by_ticket, "image", job_request(project_id=project))
    pg_ledger.request_job(user, by_credit, "video", job_request(project_id=project))
    pg_ledger.request_job(user, failed, "image", job_request(project_id=project))
    pg_ledger.request_job(user, canceled, "image", job_request(project_id=project))
    pg_ledger.complete_job(user, by_ticket, _outputs())
    pg_ledger.complete_job(user, by_credit, _outputs("video"))
    pg_ledger.fail_job(user, failed, {"code": "generator_error", "message": "boom", "retryable": False})
    pg_ledger.cancel_job(user, canceled)
    pg_ledger.admin_refund(user, by_credit, "bad video", by="admin@example.com")
    pg_ledger.adjust(user, "credit", -1, "correction")
    projector = Projector(pg_url, poll_interval=1.0)
    projector.catch_up()

    credits, tickets, pending = one(
        pg_url, "SELECT credits, tickets, pending_reservations FROM point_balance WHERE user_id = %s", user
    )
    # 10 - 5 (video) + 5 (admin refund) - 1 (adjusted); failed and canceled jobs refunded
    assert (credits, tickets, pending) == (9, {"lookbook": 0}, 0)
    with psycopg.connect(pg_url) as conn:
        usage = conn.execute(
            "SELECT type, source, amount, balance_after FROM point_usage "
            "WHERE user_id = %s ORDER BY position",
            (user,),
        ).fetchall()
        jobs = dict(conn.execute("SELECT job_id, status FROM vto_job WHERE user_id = %s", (user,)).fetchall())
        refund = conn.execute(
            "SELECT refund_source, refund_amount, refund_cause FROM vto_job WHERE job_id = %s", (by_credit,)
        ).fetchone()
        gallery = conn.execute("SELECT count(*) FROM gallery WHERE project_id = %s", (project,)).fetchone()
        stats = conn.execute(
            "SELECT image_count, video_count FROM project_stats WHERE project_id = %s", (project,)
        ).fetchone()
    assert usage == [
        ("grant", "credit", 10, 10),
        ("grant", "ticket:lookbook", 1, 1),
        ("reservation", "ticket:lookbook", -1, 0),
        ("reservation", "credit", -5, 5),
        ("reservation", "credit", -1, 4),
        ("reservation", "credit", -1, 3),
        ("settlement", "ticket:lookbook", 0, 0),
        ("settlement", "credit", 0, 3),
        ("refund", "credit", 1, 4),
        ("refund", "credit", 1, 5),
        ("refund", "credit", 5, 10),
        ("adjustment", "credit", -1, 9),
    ]
    assert jobs == {by_ticket: "succeeded", by_credit: "succeeded", failed: "failed", canceled: "canceled"}
    assert refund == ("credit", 5, "admin")
    assert gallery == (2,)
    assert stats == (1, 1)


def test_subscription_quota_and_late_success_after_expiry(pg_url: str, pg_ledger: LedgerApplication) -> None:
    user = new_user(pg_ledger)
    period_end = pg_ledger.clock() + timedelta(days=30)
    pg_ledger.activate_subscription(user, "pro", period_end, 2, "plan")
    job = uuid4()
    pg_ledger.request_job(user, job, "image", job_request())
    pg_ledger.request_job(user, uuid4(), "image", job_request())
    projector = Projector(pg_url, poll_interval=1.0)
    projector.catch_up()
    assert one(
        pg_url,
        BALANCE_SQL % "subscription_plan, daily_quota, used_today",
        user,
    ) == ("pro", 2, 2)
    pg_ledger.expire_stale_reservations([user], pg_ledger.clock() + timedelta(hours=1), timedelta(minutes=1))
    projector.catch_up()
    assert one(pg_url, BALANCE_SQL % "used_today, pending_reservations", user) == (
        0,
        0,
    )
    assert one(pg_url, "SELECT status, error->>'code' FROM vto_job WHERE job_id = %s", job) == (
        "failed",
        "timeout",
    )
    pg_ledger.complete_job(user, job, _outputs())
    projector.catch_up()
    assert one(pg_url, "SELECT status, charged FROM vto_job WHERE job_id = %s", job) == ("succeeded", False)
    assert one(pg_url, "SELECT count(*) FROM gallery WHERE job_id = %s", job) == (1,)


@pytest.mark.parametrize("projection", [PointsProjection(), JobsProjection()], ids=lambda p: p.name)
def test_crash_before_commit_then_restart_leaves_the_read_model_exact(
    pg_url: str, pg_ledger: LedgerApplication, projection: PointsProjection | JobsProjection
) -> None:
    user = new_user(pg_ledger, credits=5)
    job = uuid4()
    pg_ledger.request_job(user, job, "image", job_request())
    runner = ProjectionRunner(pg_url, projection, poll_interval=1.0)
    runner.catch_up()
    before, position = dump(pg_url), tracking(pg_url)[projection.name]
    pg_ledger.complete_job(user, job, _outputs())
    pg_ledger.grant_credits(user, 3, "more")

    def crash(batch: object) -> None:
        raise Crash

    runner.before_commit = crash
    with pytest.raises(Crash):
        runner.catch_up()
    assert dump(pg_url) == before
    assert tracking(pg_url)[projection.name] == position
    runner.close()

    restarted = ProjectionRunner(
        pg_url, projection, poll_interval=1.0
    )  # a new process: resumes from tracking
    assert restarted.catch_up() == 2
    incremental = dump(pg_url)
    rebuild(pg_url, projection)
    assert dump(pg_url) == incremental


def test_duplicate_delivery_is_applied_once(pg_url: str, pg_ledger: LedgerApplication) -> None:
    user = new_user(pg_ledger, credits=5)
    pg_ledger.request_job(user, uuid4(), "image", job_request())
    with psycopg.connect(pg_url) as conn, conn.cursor() as cur:
        batch = decode(select_after(cur, 0, 100), ledger_mapper())
    runners = [ProjectionRunner(pg_url, p, poll_interval=1.0) for p in (PointsProjection(), JobsProjection())]
    for runner in runners:
        assert runner.deliver(batch) == len(batch)
    once = dump(pg_url)
    for runner in runners:
        assert runner.deliver(batch) == 0  # delivered again: behind the position, skipped
        assert runner.deliver(batch[1:]) == 0
        assert runner.catch_up() == 0
    assert dump(pg_url) == once
    assert one(pg_url, "SELECT credits FROM point_balance WHERE user_id = %s", user) == (4,)


def test_two_runners_of_one_projection_apply_each_event_once(
    pg_url: str, pg_ledger: LedgerApplication
) -> None:
    user = new_user(pg_ledger)
    for _ in range(30):
        pg_ledger.grant_credits(user, 1, "drip")
    a = ProjectionRunner(pg_url, PointsProjection(), batch_size=7, poll_interval=0.05).start()
    b = ProjectionRunner(pg_url, PointsProjection(), batch_size=5, poll_interval=0.05).start()
    try:
        last = pg_ledger.grant_credits(user, 1, "last").position
        assert last is not None
        assert wait_for_position(pg_url, ["points"], last, timeout=10)
    finally:
        a.stop()
        b.stop()
    assert one(pg_url, "SELECT credits FROM point_balance WHERE user_id = %s", user) == (31,)
    assert one(pg_url, "SELECT count(*) FROM point_usage WHERE user_id = %s", user) == (31,)


@pytest.mark.parametrize("listen", [True, False], ids=["listen", "poll-only"])
def test_started_projector_gives_read_your_writes(
    pg_url: str, pg_ledger: LedgerApplication, listen: bool
) -> None:
    # poll-only = a LISTEN connection that silently died: the poll still moves the runner
    with Projector(pg_url, listen=listen, poll_interval=0.05 if not listen else 1.0) as projector:
        user = new_user(pg_ledger, credits=5)
        job = uuid4()
        result = pg_ledger.request_job(user, job, "image", job_request())
        assert projector.wait_for(result.position, timeout=10)
        assert one(pg_url, "SELECT status FROM vto_job WHERE job_id = %s", job) == ("queued",)
        assert one(pg_url, "SELECT credits FROM point_balance WHERE user_id = %s", user) == (4,)
        assert not projector.wait_for((result.position or 0) + 1000, timeout=0.05)


def test_lag_in_events_and_seconds(pg_url: str, settings: Settings, clock: FakeClock) -> None:
    """The lag's age is the oldest unapplied event's, read on the clock given (here 90 s
    after that event was written); a clock behind the event reads 0, never a negative age."""
    ledger = postgres_ledger(settings, pg_url, clock=clock)
    try:
        written_at = clock.now
        user = new_user(ledger, credits=5)
        clock.advance(seconds=30)
        ledger.grant_credits(user, 1, "x")
    finally:
        ledger.close()
    with psycopg.connect(pg_url) as conn:
        lags = {lg.name: lg for lg in lag(conn, now=written_at + timedelta(seconds=90))}
        behind_the_event = {lg.name: lg for lg in lag(conn, now=written_at - timedelta(seconds=5))}
    assert (lags["points"].events, lags["points"].position, lags["points"].seconds) == (3, 0, 90.0)
    assert behind_the_event["points"].seconds == 0.0
    ProjectionRunner(pg_url, PointsProjection(), poll_interval=1.0).catch_up()
    with psycopg.connect(pg_url) as conn:
        lags = {lg.name: lg for lg in lag(conn, now=written_at + timedelta(seconds=90))}
    assert (lags["points"].events, lags["points"].seconds) == (0, 0.0)
    assert (lags["jobs"].events, lags["jobs"].seconds) == (3, 90.0)


def test_an_event_the_projection_cannot_apply_is_named_and_stops_waiters(
    pg_url: str, pg_ledger: LedgerApplication, caplog: pytest.LogCaptureFixture
) -> None:
    """A grant reason with NUL is in the event store (written before the API refused it):
    PostgreSQL cannot store it in point_usage. The runner applies what comes before it, names
    the event (log, projection_tracking), and read-your-writes waiters stop waiting."""
    user = new_user(pg_ledger, credits=3)
    bad = pg_ledger.adjust(user, "credit", 1, "bad\x00reason").position
    after = pg_ledger.adjust(user, "credit", 1, "fine").position
    assert bad is not None and after is not None
    runner = ProjectionRunner(pg_url, PointsProjection(), poll_interval=0.2)
    runner.start()
    try:
        # Returns once the runner names the event (or at the deadline, and the test fails).
        assert runner.wait_for(after, timeout=60) is False
        with psycopg.connect(pg_url) as conn:  # published after it was recorded: the row is there
            assert [(row[0], row[2]) for row in tracking_failing(conn)] == [("points", bad)]
    finally:
        runner.stop()  # the retries stop: what the runner and the row say stays put
    failure = runner.failing
    assert failure is not None and failure.position == bad
    assert runner.position == bad - 1  # everything before it was applied
    started = time.monotonic()
    assert runner.wait_for(after, timeout=60) is False  # stuck on an event: no wait at all
    assert time.monotonic() - started < 30
    with psycopg.connect(pg_url) as conn:
        assert tracking_failing(conn) == [("points", failure.failures, bad, runner_error(conn))]
        error = runner_error(conn)  # the event, and psycopg's or PostgreSQL's words (COPY)
        assert "0x00" in error and "Adjusted" in error
    assert any(f"cannot apply event {bad}" in r.getMessage() for r in caplog.records)


def test_a_failing_event_is_recorded_before_the_runner_publishes_it(
    pg_url: str, pg_ledger: LedgerApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever sees ``runner.failing`` (a waiter of this process) finds the row that
    ``/readyz`` and other processes read already written: each failure is written to
    ``projection_tracking`` while the runner still shows the one before it."""
    user = new_user(pg_ledger, credits=3)
    bad = pg_ledger.adjust(user, "credit", 1, "bad\x00reason").position
    runner = ProjectionRunner(pg_url, PointsProjection(), poll_interval=0.2)
    shown_while_recording: list[tuple[int, int | None]] = []
    record = projections.tracking.record_failure

    def recording(conn: psycopg.Connection[Any], name: str, failures: int, *args: Any) -> None:
        shown = runner.failing
        shown_while_recording.append((failures, None if shown is None else shown.failures))
        record(conn, name, failures, *args)

    monkeypatch.setattr(projections.tracking, "record_failure", recording)
    for _ in range(4):  # the batch fails, then its events are applied one at a time up to the bad one
        with contextlib.suppress(psycopg.Error):
            runner.deliver()
    with pytest.raises(psycopg.Error):
        runner.deliver()
    runner.close()
    assert runner.failing is not None and (runner.failing.position, runner.failing.failures) == (bad, 2)
    assert shown_while_recording == [(1, None), (2, 1)]
    with psycopg.connect(pg_url) as conn:
        assert [row[:3] for row in tracking_failing(conn)] == [("points", 2, bad)]


def test_a_commit_clears_the_failure(pg_url: str, pg_ledger: LedgerApplication) -> None:
    user = new_user(pg_ledger, credits=3)
    position = pg_ledger.adjust(user, "credit", 1, "fine").position
    assert position is not None
    runner = ProjectionRunner(pg_url, PointsProjection(), poll_interval=0.2)
    calls = {"n": 0}

    def fail_once(batch: object) -> None:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise Crash("the database said no")

    runner.before_commit = fail_once
    for _ in range(2):
        with pytest.raises(Crash):
            runner.deliver()
    assert runner.failing is not None and runner.failing.failures == 2
    with psycopg.connect(pg_url) as conn:
        assert [row[0] for row in tracking_failing(conn)] == ["points"]
    runner.catch_up()
    assert runner.failing is None and runner.position == position
    with psycopg.connect(pg_url) as conn:
        assert tracking_failing(conn) == []
    runner.close()


def runner_error(conn: psycopg.Connection[object]) -> str:
    row = conn.execute("SELECT error FROM projection_tracking WHERE name = 'points'").fetchone()
    assert row is not None
    return str(row[0])


# ------------------------------------------------------------------ catching up
class CountingMapper(Mapper[UUID]):
    """The ledger's mapper, counting the events it decodes."""

    def __init__(self) -> None:
        super().__init__(transcoder=event_transcoder())
        self.decoded = 0

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        self.decoded += 1
        return super().to_domain_event(stored_event)


def test_a_projector_decodes_each_event_once_for_its_runners(
    pg_url: str, pg_ledger: LedgerApplication
) -> None:
    random_history(pg_ledger, users=6, events=700, seed=5)
    head = pg_ledger.position()
    assert head is not None
    mapper = CountingMapper()
    projector = Projector(pg_url, batch_size=50, catch_up_batch_size=200, poll_interval=1.0, mapper=mapper)
    assert projector.catch_up() == 2 * head
    assert mapper.decoded == head  # not once per runner
    assert tracking(pg_url) == {"points": head, "jobs": head}


def test_a_runner_behind_takes_larger_batches(pg_url: str, pg_ledger: LedgerApplication) -> None:
    user = new_user(pg_ledger)
    for _ in range(24):
        pg_ledger.grant_credits(user, 1, "test")
    runner = ProjectionRunner(
        pg_url, PointsProjection(), batch_size=3, catch_up_batch_size=10, poll_interval=1.0
    )
    sizes: list[int] = []
    runner.before_commit = lambda batch: sizes.append(len(batch))
    assert runner.catch_up() == 25
    assert sizes == [3, 10, 10, 2]  # small first; larger once a batch came full
    pg_ledger.grant_credits(user, 1, "test")
    assert runner.catch_up() == 1 and sizes[-1] == 1
    assert runner.batch_size == 3 and not runner.full


def test_live_runners_catching_up_a_backlog_make_what_a_rebuild_makes(
    pg_url: str, pg_ledger: LedgerApplication
) -> None:
    """The runners' threads share their decoded events and take large batches while behind
    (with fewer collector passes): the read models equal a rebuild's."""
    random_history(pg_ledger, users=10, events=1500, seed=11)
    head = pg_ledger.position()
    assert head is not None
    with Projector(pg_url, batch_size=7, catch_up_batch_size=120, poll_interval=0.05) as projector:
        assert projector.wait_for(head, timeout=120)
        assert projector.position() >= head
    live = dump(pg_url)
    assert live["point_usage"] and live["gallery"]
    rebuild(pg_url, all_projections())
    assert dump(pg_url) == live


def test_an_output_with_a_nan_duration_is_projected(pg_url: str, pg_ledger: LedgerApplication) -> None:
    """JSON has no NaN and jsonb refuses it: the output's duration is null in the job's
    outputs (it stopped the projection before), and NaN in the gallery's float column."""
    user = new_user(pg_ledger, credits=10)
    job = uuid4()
    pg_ledger.request_job(user, job, "video", job_request())
    outputs = [{"storage_key": "out/v.mp4", "media_type": "video/mp4", "duration": math.nan, "big": 2**70}]
    position = pg_ledger.complete_job(user, job, outputs).position
    Projector(pg_url, poll_interval=1.0).catch_up()
    assert tracking(pg_url) == {"points": position, "jobs": position}
    stored, status = one(pg_url, "SELECT outputs, status FROM vto_job WHERE job_id = %s", job)
    assert stored == [{"storage_key": "out/v.mp4", "media_type": "video/mp4", "duration": None, "big": 2**70}]
    assert status == "succeeded"
    (duration,) = one(pg_url, "SELECT duration FROM gallery WHERE job_id = %s", job)
    assert math.isnan(duration)


def test_a_projector_keeps_its_projections_in_one_transaction_a_batch(
    pg_url: str, pg_ledger: LedgerApplication
) -> None:
    """Started, a projector's runners share one thread and one transaction a batch: both
    tracking rows were last written by the same transaction."""
    with Projector(pg_url, poll_interval=1.0) as projector:
        assert projector.together is not None and projector.together.running
        assert not any(r.running for r in projector.runners) and projector.stopped() == []
        user = new_user(pg_ledger, credits=5)
        result = pg_ledger.request_job(user, uuid4(), "image", job_request())
        assert projector.wait_for(result.position, timeout=10)
        with psycopg.connect(pg_url) as conn:
            written_by = conn.execute(
                "SELECT name, position, xmin::text FROM projection_tracking WHERE name = ANY(%s)",
                (["points", "jobs"],),
            ).fetchall()
        assert {(name, at) for name, at, _ in written_by} == {
            ("points", result.position),
            ("jobs", result.position),
        }
        assert len({xid for _, _, xid in written_by}) == 1
        assert one(pg_url, "SELECT credits FROM point_balance WHERE user_id = %s", user) == (4,)
    assert projector.stopped() == ["points", "jobs"]


def test_idle_holds_a_wake_up_to_the_batch_interval_only_after_a_recent_batch(pg_url: str) -> None:
    """After a quiet spell (the last batch's start plus the interval already past) a
    notification ends the wait at once; within the interval the wait lasts until it ends,
    taking the notifications that come meanwhile (they join that one batch)."""
    stop = threading.Event()
    with (
        psycopg.connect(pg_url, autocommit=True) as listener,
        psycopg.connect(pg_url, autocommit=True) as other,
    ):
        listener.execute(f"LISTEN {CHANNEL}")
        other.execute(f"NOTIFY {CHANNEL}")
        started = time.monotonic()
        assert idle(listener, 5.0, stop, "test", Pace(1.0), last_batch=started - 2.0) is listener
        assert time.monotonic() - started < 1.0
        other.execute(f"NOTIFY {CHANNEL}")
        started = time.monotonic()
        assert idle(listener, 5.0, stop, "test", Pace(1.0), last_batch=started) is listener
        assert time.monotonic() - started >= 1.0
        other.execute(f"NOTIFY {CHANNEL}, 'after'")
        # nothing left over from the gathering: the next notification is the one sent after it
        assert [n.payload for n in listener.notifies(timeout=1.0, stop_after=1)] == ["after"]


def test_readers_heard_bring_the_gathered_batch_forward_while_they_keep_coming(pg_url: str) -> None:
    """While appends are held to the batch interval, a reader's wait (``WANTED_CHANNEL``)
    ends the gathering at the shorter interval; for ``READERS_HEARD_S`` after it the shorter
    interval holds with no further nudge, and once that has passed the longer one is back."""
    stop = threading.Event()
    readers = Readers()
    with (
        psycopg.connect(pg_url, autocommit=True) as listener,
        psycopg.connect(pg_url, autocommit=True) as other,
    ):
        listener.execute(f"LISTEN {CHANNEL}")
        listener.execute(f"LISTEN {WANTED_CHANNEL}")
        other.execute(f"NOTIFY {CHANNEL}")
        other.execute(f"NOTIFY {WANTED_CHANNEL}, '8'")
        started = time.monotonic()
        assert idle(listener, 10.0, stop, "test", Pace.of(5.0, 0.01), started, readers) is listener
        assert time.monotonic() - started < 4.0
        assert readers.active()
        other.execute(f"NOTIFY {CHANNEL}")  # an append, no reader told: still the shorter interval
        started = time.monotonic()
        assert idle(listener, 10.0, stop, "test", Pace.of(5.0, 0.01), started, readers) is listener
        assert time.monotonic() - started < 4.0
        readers.heard = time.monotonic() - READERS_HEARD_S  # as if heard a while ago
        other.execute(f"NOTIFY {CHANNEL}")
        started = time.monotonic()
        assert idle(listener, 10.0, stop, "test", Pace.of(0.5, 0.01), started, readers) is listener
        assert time.monotonic() - started >= 0.5


def test_idle_returns_at_once_when_asked_to_stop(pg_url: str) -> None:
    """A stop (the event set, then the loop's wake-up channel notified) ends the wait and
    the gathering at once, whatever the poll and the batch interval."""
    stop = threading.Event()
    channel = wake_channel()
    with psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        listener.execute(f"LISTEN {channel}")
        waker = threading.Timer(0.2, lambda: (stop.set(), wake(pg_url, channel)))
        started = time.monotonic()
        waker.start()
        assert idle(listener, 30.0, stop, "test", Pace(30.0), last_batch=started) is listener
        assert time.monotonic() - started < 5.0
        waker.join()
        started = time.monotonic()  # set before: no wait at all
        assert idle(listener, 30.0, stop, "test", Pace(30.0), last_batch=started) is listener
        assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("together", [True, False], ids=["together", "a-thread-each"])
def test_a_projector_stops_at_once_however_long_its_poll(
    pg_url: str, pg_ledger: LedgerApplication, together: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping a projector whose threads wait on their LISTEN connections does not wait
    for their poll (it used to take up to ``projection_poll_interval_s`` a thread)."""
    threads = 1 if together else 2
    waiting = threading.Semaphore(0)
    real_idle = projections.runner.idle

    def idle_noted(*args: Any, **kwargs: Any) -> psycopg.Connection[Any] | None:
        waiting.release()
        return real_idle(*args, **kwargs)

    monkeypatch.setattr(projections.runner, "idle", idle_noted)
    projector = Projector(pg_url, poll_interval=30.0, together=together).start()
    for _ in range(threads):  # each thread has entered its wait
        assert waiting.acquire(timeout=10)
    started = time.monotonic()
    projector.stop()
    assert time.monotonic() - started < 5.0
    assert projector.stopped() == [r.name for r in projector.runners]


def test_a_pace_listens_for_readers_only_when_they_have_something_to_bring_forward() -> None:
    assert Pace.of(0.1, 0.01) == Pace(0.1, 0.01) and Pace.of(0.1, 0.01).listens
    assert not Pace.of(0.01, 0.01).listens
    assert not Pace.of(0.0, 0.01).listens
    assert not Pace.of(0.1, None).listens


@pytest.mark.parametrize("together", [True, False], ids=["together", "a-thread-each"])
def test_a_reader_waiting_for_a_write_is_not_held_to_the_batch_interval(
    pg_url: str, pg_ledger: LedgerApplication, together: bool
) -> None:
    """Under a batch interval longer than any wait here, an append is not projected while
    nobody waits for it; once a reader says it waits (``Nudge``), it is, at once."""
    user = new_user(pg_ledger, credits=20)
    before = pg_ledger.position()
    assert before is not None
    options: dict[str, Any] = {"batch_interval": 3.0, "wanted_batch_interval": 0.01, "together": together}
    with Projector(pg_url, poll_interval=5.0, **options) as projector:
        assert projector.wait_for(before, timeout=10)  # the start's batch: the interval runs from it
        position = pg_ledger.request_job(user, uuid4(), "image", job_request()).position
        assert position is not None
        assert not projector.wait_for(position, timeout=0.3)  # held to the interval
        started = time.monotonic()
        Nudge(lambda: psycopg.connect(pg_url, autocommit=True)).want(position)
        assert projector.wait_for(position, timeout=10)
        assert time.monotonic() - started < 1.5  # well before the interval (3 s) ran out
        assert one(pg_url, "SELECT credits FROM point_balance WHERE user_id = %s", user) == (19,)


@pytest.mark.parametrize("together", [True, False], ids=["together", "a-thread-each"])
def test_appends_within_the_batch_interval_share_one_batch(
    pg_url: str, pg_ledger: LedgerApplication, together: bool
) -> None:
    """Appends that follow a batch within the batch interval are projected together when it
    ends: one batch, one commit."""
    user = new_user(pg_ledger, credits=20)
    before = pg_ledger.position()
    assert before is not None
    with Projector(pg_url, poll_interval=5.0, batch_interval=1.5, together=together) as projector:
        assert projector.wait_for(before, timeout=10)  # the start's batch: the interval runs from it
        commits: list[int] = []
        projector.runners[0].on_commit.append(commits.append)
        positions = [pg_ledger.request_job(user, uuid4(), "image", job_request()).position for _ in range(8)]
        last = positions[-1]
        assert last is not None
        assert projector.wait_for(last, timeout=10)
        assert [p for p in commits if p > before] == [last]  # the eight in one batch
        assert one(pg_url, "SELECT credits FROM point_balance WHERE user_id = %s", user) == (12,)


def test_a_projection_stuck_together_gets_a_thread_of_its_own_and_the_others_go_on(
    pg_url: str, pg_ledger: LedgerApplication
) -> None:
    """An event the points projection cannot apply (a NUL in a grant reason) fails the batch
    together; each runner delivers on its own, the points runner fails again and names the
    event, and from then on each runner has its thread: the jobs projection goes past it."""
    user = new_user(pg_ledger, credits=3)
    bad = pg_ledger.adjust(user, "credit", 1, "bad\x00reason").position
    job = uuid4()
    after = pg_ledger.request_job(user, job, "image", job_request()).position
    assert bad is not None and after is not None
    with Projector(pg_url, poll_interval=0.2) as projector:
        assert projector.runner("jobs").wait_for(after, timeout=60)
        assert projector.runner("points").wait_for(after, timeout=60) is False
        assert projector.together is not None and projector.together.handed_off
        assert all(r.running for r in projector.runners) and projector.stopped() == []
        assert one(pg_url, "SELECT status FROM vto_job WHERE job_id = %s", job) == ("queued",)
        with psycopg.connect(pg_url) as conn:
            assert [(row[0], row[2]) for row in tracking_failing(conn)] == [("points", bad)]


def test_runners_handed_their_threads_keep_the_readers_heard_together(pg_url: str) -> None:
    """A reader heard waiting by ``Together`` is still heard by each runner once it has its own
    thread: their batches keep the shorter interval for it."""
    projector = Projector(pg_url, poll_interval=5.0, batch_interval=1.0, wanted_batch_interval=0.01)
    together = projector.together
    assert together is not None
    assert not any(r.readers.active() for r in projector.runners)
    together.readers.heard = time.monotonic()
    try:
        together._hand_off()
        assert all(r.running and r.readers.active() for r in projector.runners)
    finally:
        projector.stop()


def test_projectors_started_far_behind_catch_up_by_one_rebuild_and_go_on(
    pg_url: str, pg_ledger: LedgerApplication, caplog: pytest.LogCaptureFixture
) -> None:
    """Read models emptied (a restored backup, a new deployment): the whole log is backlog.
    Two projectors started at once rebuild once (the other finds the rebuilt positions),
    make what the batches make, and follow the log from there."""
    head, expected = projected_history(pg_url, pg_ledger, users=6, events=400, seed=12)
    forget(pg_url)
    caplog.set_level(logging.INFO, logger="projections.runner")
    with (
        Projector(pg_url, poll_interval=0.2, rebuild_from=100) as first,
        Projector(pg_url, poll_interval=0.2, rebuild_from=100) as second,
    ):
        assert first.wait_for(head, timeout=60) and second.wait_for(head, timeout=60)
        assert dump(pg_url) == expected
        user = new_user(pg_ledger, credits=2)
        after = pg_ledger.grant_credits(user, 3, "after the rebuild").position
        assert first.wait_for(after, timeout=10) and second.wait_for(after, timeout=10)
        assert one(pg_url, "SELECT credits FROM point_balance WHERE user_id = %s", user) == (5,)
    rebuilt = f"projections: far behind; rebuilt to position {head} in "
    assert sum(r.getMessage().startswith(rebuilt) for r in caplog.records) == 1


def test_a_projector_a_little_behind_catches_up_batch_by_batch(
    pg_url: str, pg_ledger: LedgerApplication, caplog: pytest.LogCaptureFixture
) -> None:
    random_history(pg_ledger, users=4, events=300, seed=13)
    Projector(pg_url, poll_interval=1.0).catch_up()
    random_history(pg_ledger, users=2, events=60, seed=14)  # under a third of the log
    head = pg_ledger.position()
    assert head is not None
    caplog.set_level(logging.INFO, logger="projections.runner")
    with Projector(pg_url, poll_interval=0.2, rebuild_from=10) as projector:
        assert projector.wait_for(head, timeout=60)
    assert not [r for r in caplog.records if "rebuil" in r.getMessage()]
    live = dump(pg_url)
    rebuild(pg_url, all_projections())
    assert dump(pg_url) == live


def test_a_catch_up_by_rebuild_that_fails_falls_back_to_batches_which_name_the_event(
    pg_url: str, pg_ledger: LedgerApplication, caplog: pytest.LogCaptureFixture
) -> None:
    """An event the points projection cannot apply (a NUL in a grant reason) fails the
    rebuild; the runners then go batch by batch, name the event, and the jobs projection
    goes past it."""
    user = new_user(pg_ledger, credits=3)
    bad = pg_ledger.adjust(user, "credit", 1, "bad\x00reason").position
    job = uuid4()
    after = pg_ledger.request_job(user, job, "image", job_request()).position
    assert bad is not None and after is not None
    with Projector(pg_url, poll_interval=0.2, rebuild_from=1) as projector:
        assert projector.runner("jobs").wait_for(after, timeout=60)
        assert projector.runner("points").wait_for(after, timeout=60) is False
    assert any("the catch-up by a rebuild failed" in r.getMessage() for r in caplog.records)
    assert tracking(pg_url)["jobs"] == after
    with psycopg.connect(pg_url) as conn:
        assert [(row[0], row[2]) for row in tracking_failing(conn)] == [("points", bad)]
