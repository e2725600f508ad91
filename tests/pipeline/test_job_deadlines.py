"""Job deadlines in the pipeline (docs/job-deadlines.md): the sweeper cancels and refunds a job
still open past its deadline (refund cause ``deadline``), queued or running, exactly once; the
worker drops the outcome of a job canceled meanwhile, and does not start one past its
deadline; a result that arrives after the cancel changes nothing. Time is a ``FakeClock``
shared by the ledger, the worker and the sweeper: no sleeps."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import psycopg

from generator_worker.attempts import JobAttempts
from generator_worker.generation.base import GenerationRequest, GenerationResult
from generator_worker.worker import Worker
from infra.ledger_store import postgres_ledger
from infra.queue.base import PipelineOptions
from infra.queue.memory import InProcessQueue
from infra.settings import Settings
from infra.storage import LocalStorage
from ledger.application import DEADLINE_REASON, LedgerApplication
from pipeline.messages import JobRequest, JobResult
from pipeline.sweeper import Sweeper
from projections.audit import audit
from projections.runner import Projector
from tests.conftest import FakeClock
from tests.factories import new_user
from tests.pipeline.conftest import TinyGenerator, build_pipeline, job_request, job_status, wait_until

TIMEOUT = timedelta(seconds=900)  # the job timeout: far beyond the deadlines here


def usage_lines(url: str, job_id: uuid.UUID) -> list[tuple[str, str, int, str]]:
    """The job's accounting lines (type, source, amount, reason), in order."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT type, source, amount, reason FROM point_usage WHERE job_id = %s ORDER BY position",
            (job_id,),
        ).fetchall()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def job_row(url: str, job_id: uuid.UUID) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(
            "SELECT status, charged, refund_cause, refund_amount, error, deadline_at, created_at "
            "FROM vto_job WHERE job_id = %s",
            (job_id,),
        )
        row = cur.fetchone()
        assert row is not None and cur.description is not None
        return dict(zip([c.name for c in cur.description], row, strict=True))


def assert_refunded_once_at_deadline(
    url: str, ledger: LedgerApplication, user: uuid.UUID, job_id: uuid.UUID
) -> None:
    assert job_status(ledger, user, job_id) == "canceled"
    assert ledger.account(user).credits == 5  # the 1 credit reserved is back
    refund = ("refund", "credit", 1, f"deadline: {DEADLINE_REASON}")
    assert usage_lines(url, job_id) == [("reservation", "credit", -1, "image job"), refund]
    row = job_row(url, job_id)
    assert (row["status"], row["charged"], row["refund_cause"], row["refund_amount"]) == (
        "canceled",
        False,
        "deadline",
        1,
    )
    assert row["error"] == {"code": "canceled", "message": DEADLINE_REASON}


def test_a_queued_job_past_its_deadline_is_canceled_and_refunded_once(
    pg_url: str, settings: Settings, inputs: Any
) -> None:
    clock = FakeClock()
    ledger = postgres_ledger(settings, pg_url, clock=clock)
    try:
        user, other = new_user(ledger, credits=5), new_user(ledger, credits=5)
        job_id, without = uuid.uuid4(), uuid.uuid4()
        ledger.request_job(user, job_id, "image", {**job_request(inputs), "deadline_s": 60})
        ledger.request_job(other, without, "image", job_request(inputs))  # no deadline
        projector = Projector(pg_url, poll_interval=1.0)
        projector.catch_up()
        assert job_row(pg_url, job_id)["deadline_at"] == clock.now + timedelta(seconds=60)
        assert job_row(pg_url, without)["deadline_at"] is None
        sweeper = Sweeper(pg_url, ledger, TIMEOUT, interval=0.01, clock=clock)

        clock.advance(seconds=59)
        sweeper.sweep()
        assert sweeper.past_deadline == 0
        assert job_status(ledger, user, job_id) == "reserved"

        clock.advance(seconds=1)  # the deadline itself
        sweeper.sweep()
        assert sweeper.past_deadline == 1
        # at least once: a pass that finds the job again (the read model not caught up yet)
        # refunds nothing twice
        sweeper.sweep()
        assert sweeper.cancel_past_deadline([(user, job_id)]) == []
        projector.catch_up()
        sweeper.sweep()
        assert sweeper.past_deadline == 1
        assert_refunded_once_at_deadline(pg_url, ledger, user, job_id)
        assert job_status(ledger, other, without) == "reserved"  # a job without a deadline: untouched
        assert ledger.account(other).credits == 4
        assert sweeper.errors == 0
        report = audit(pg_url)  # the ledger's invariants and the read models agree
        assert report.ok, report.lines()
    finally:
        ledger.close()


class HeldGenerator(TinyGenerator):
    """Generates once the test lets it: the job is running meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.started.set()
        self.release.wait(30)
        return super().generate(request)


def test_a_running_job_past_its_deadline_is_canceled_once_and_a_late_result_changes_nothing(
    pg_url: str, settings: Settings, storage: LocalStorage, inputs: Any
) -> None:
    clock = FakeClock()
    ledger = postgres_ledger(settings, pg_url, clock=clock)
    queue = InProcessQueue()
    options = PipelineOptions.from_settings(settings)
    generator = HeldGenerator()
    pipeline = build_pipeline(pg_url, ledger, queue, options, storage, generator)
    try:
        user = new_user(ledger, credits=5)
        job_id = uuid.uuid4()
        ledger.request_job(user, job_id, "image", {**job_request(inputs), "deadline_s": 60})
        pipeline.start()
        assert generator.started.wait(30), "the worker never started the job"
        projector = Projector(pg_url, poll_interval=1.0)

        def running() -> bool:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                return (
                    conn.execute("SELECT 1 FROM job_progress WHERE job_id = %s", (job_id,)).fetchone()
                    is not None
                )

        wait_until(running, 30, "the job's progress (running)")
        projector.catch_up()
        sweeper = Sweeper(pg_url, ledger, TIMEOUT, interval=0.01, clock=clock)
        clock.advance(seconds=61)
        sweeper.sweep()
        assert sweeper.past_deadline == 1
        assert job_status(ledger, user, job_id) == "canceled"

        generator.release.set()  # the generation finishes after the cancel: its result is dropped
        (worker,) = pipeline.workers
        wait_until(lambda: worker.loop.outcomes["dropped"] == 1, 30, "the worker to drop the outcome")
        assert worker.dropped == 1
        results = queue.messages(options.topics.results)
        assert results == []

        # a result that arrives anyway (another worker's, a redelivery) changes nothing
        late = JobResult.succeeded(
            job_id, user, [{"storage_key": f"outputs/{user}/{job_id}/0.png", "media_type": "image/png"}]
        )
        queue.publisher().publish(options.topics.results, str(job_id), late.to_dict())
        assert pipeline.ingestor is not None
        ingestor = pipeline.ingestor
        wait_until(lambda: ingestor.loop.outcomes["duplicate"] == 1, 30, "the late result handled")
        assert ingestor.loop.outcomes["applied"] == 0

        projector.catch_up()
        sweeper.sweep()
        assert sweeper.past_deadline == 1
        assert_refunded_once_at_deadline(pg_url, ledger, user, job_id)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM gallery WHERE job_id = %s", (job_id,)).fetchone() == (
                0,
            )
    finally:
        generator.release.set()
        pipeline.stop()
        ledger.close()


def test_the_worker_does_not_start_a_job_past_its_deadline(
    pg_url: str, pg_ledger: LedgerApplication, storage: LocalStorage, inputs: Any
) -> None:
    clock = FakeClock()
    options = PipelineOptions.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    queue = InProcessQueue()
    user = new_user(pg_ledger, credits=5)
    job_id = uuid.uuid4()
    request = {**job_request(inputs), "deadline_s": 60}
    pg_ledger.request_job(user, job_id, "image", request)
    generator = TinyGenerator()
    worker = Worker(
        queue, generator, storage, pg_ledger.reservation_status, JobAttempts(pg_url), options, clock=clock
    )
    message = JobRequest.from_event(user, job_id, "image", request, clock.now)
    assert message.deadline_at == clock.now + timedelta(seconds=60)
    assert JobRequest.from_dict(message.to_dict()).deadline_at == message.deadline_at  # on the wire
    clock.advance(seconds=60)
    queue.publisher().publish(options.topics.requested, str(job_id), message.to_dict())
    worker.start()
    try:
        wait_until(lambda: sum(worker.loop.outcomes.values()) == 1, 10, "the request handled")
    finally:
        worker.stop()
    assert worker.loop.outcomes == {"past_deadline": 1}
    assert generator.calls == 0
    assert queue.messages(options.topics.results) == []
    assert job_status(pg_ledger, user, job_id) == "reserved"  # the sweeper cancels it, not the worker


def test_a_job_expired_meanwhile_still_gets_its_outcome_but_a_canceled_one_does_not(
    pg_url: str, pg_ledger: LedgerApplication, storage: LocalStorage, inputs: Any
) -> None:
    """Only a cancel drops a generation's outcome: a success after the job timeout's expiry is
    still delivered free (the ingestor decides), as it was before deadlines."""
    options = PipelineOptions.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    queue = InProcessQueue()
    user = new_user(pg_ledger, credits=5)
    expired, canceled = uuid.uuid4(), uuid.uuid4()
    generator = HeldGenerator()
    worker = Worker(queue, generator, storage, pg_ledger.reservation_status, JobAttempts(pg_url), options)
    worker.start()
    try:
        for job_id in (expired, canceled):
            generator.started.clear()
            generator.release.clear()
            pg_ledger.request_job(user, job_id, "image", job_request(inputs))
            message = JobRequest.from_event(user, job_id, "image", job_request(inputs), pg_ledger.clock())
            queue.publisher().publish(options.topics.requested, str(job_id), message.to_dict())
            assert generator.started.wait(30), "the worker never started the job"
            if job_id == expired:
                later = pg_ledger.clock() + timedelta(hours=1)
                pg_ledger.expire_stale_reservations([user], later, timedelta(seconds=60))
            else:
                pg_ledger.cancel_job(user, job_id)
            generator.release.set()
            wait_until(
                lambda: sum(worker.loop.outcomes.values()) == (1 if job_id == expired else 2), 30, "done"
            )
    finally:
        generator.release.set()
        worker.stop()
    assert worker.loop.outcomes == {"succeeded": 1, "dropped": 1}
    (result,) = [JobResult.from_dict(m.json_value()) for m in queue.messages(options.topics.results)]
    assert result.job_id == expired
