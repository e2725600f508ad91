"""Pipeline pieces without a broker: the in-process queue's semantics, the consume loop's
at-least-once handling of failures, the relay's position on a failed flush, the worker's
decisions and the sweeper."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from generator_worker.attempts import JobAttempts
from generator_worker.generation.base import GeneratedOutput, GenerationRequest, GenerationResult
from generator_worker.worker import Worker
from infra.ledger_store import postgres_ledger
from infra.queue.base import Message, PipelineOptions
from infra.queue.memory import InProcessPublisher, InProcessQueue
from infra.settings import Settings
from infra.storage import LocalStorage
from pipeline.consume import ConsumerLoop
from pipeline.messages import JobRequest, JobResult
from pipeline.relay import OutboxRelay
from pipeline.sweeper import Sweeper
from projections.runner import Projector
from tests.conftest import FakeClock
from tests.factories import new_user
from tests.pipeline.conftest import TinyGenerator, job_request, job_status, wait_until


def test_in_process_groups_split_partitions_and_resume_from_commits() -> None:
    queue = InProcessQueue(partitions=4)
    publisher = queue.publisher()
    for i in range(20):
        publisher.publish("t", f"k{i}", {"i": i})
    a, b = queue.consumer(["t"], "g"), queue.consumer(["t"], "g")
    assert a.assignment() | b.assignment() == {("t", p) for p in range(4)}
    assert not a.assignment() & b.assignment()
    got_a, got_b = a.poll(0), b.poll(0)
    assert len(got_a) + len(got_b) == 20
    for message in got_a:
        a.commit(message)
    b.close()  # b committed nothing: its partitions go to a, from the start
    again = a.poll(0)
    assert sorted(m.json_value()["i"] for m in again) == sorted(m.json_value()["i"] for m in got_b)
    a.rewind(again[0])
    assert a.poll(0)[0] == again[0]
    other = queue.consumer(["t"], "other-group")
    assert len(other.poll(0, max_records=100)) == 20


def test_a_failing_message_is_retried_and_nothing_after_it_is_committed() -> None:
    queue = InProcessQueue(partitions=1)
    publisher = queue.publisher()
    for i in range(3):
        publisher.publish("t", "same-key", {"i": i})
    seen: list[int] = []
    failures = iter([True])

    def handle(message: Message) -> str:
        i = message.json_value()["i"]
        if i == 1 and next(failures, False):
            raise RuntimeError("database down")
        seen.append(i)
        return "ok"

    loop = ConsumerLoop("test", lambda: queue.consumer(["t"], "g"), handle, poll_timeout=0.05, backoff=0.01)
    loop.start()
    try:
        wait_until(lambda: loop.outcomes["ok"] == 3, 10, "three messages handled")
    finally:
        loop.stop()
    assert seen == [0, 1, 2]
    assert loop.errors == 1
    assert queue._committed[("g", "t", 0)] == 3


class FailingPublisher(InProcessPublisher):
    def __init__(self, queue: InProcessQueue) -> None:
        super().__init__(queue)
        self.fail = True

    def flush(self, timeout: float | None = None) -> None:
        if self.fail:
            raise TimeoutError("broker unavailable")


def test_the_relay_does_not_advance_past_an_unacknowledged_publish(
    pg_url: str, settings: Settings, inputs: Any
) -> None:
    ledger = postgres_ledger(settings, pg_url)
    try:
        user = new_user(ledger, credits=1)
        job_id = uuid.uuid4()
        ledger.request_job(user, job_id, "image", job_request(inputs))
        queue = InProcessQueue()
        publisher = FailingPublisher(queue)
        relay = OutboxRelay(pg_url, publisher, PipelineOptions.from_settings(settings))
        with pytest.raises(TimeoutError):
            relay.catch_up()
        assert relay.position == 0
        publisher.fail = False
        relay.catch_up()
        relay.stop()
        requests = [JobRequest.from_dict(m.json_value()) for m in queue.messages("vto.jobs.requested")]
        # at-least-once: the first attempt's message was appended before its flush failed
        assert {r.job_id for r in requests} == {job_id}
        assert (
            OutboxRelay(
                pg_url, InProcessQueue().publisher(), PipelineOptions.from_settings(settings)
            ).catch_up()
            == 0
        )  # nothing left
    finally:
        ledger.close()


def test_the_worker_skips_closed_jobs_and_fails_missing_inputs(
    pg_url: str, pg_ledger: Any, storage: LocalStorage, inputs: Any
) -> None:
    options = PipelineOptions.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    queue = InProcessQueue()
    user = new_user(pg_ledger, credits=5)
    canceled, missing = uuid.uuid4(), uuid.uuid4()
    pg_ledger.request_job(user, canceled, "image", job_request(inputs))
    pg_ledger.cancel_job(user, canceled)
    pg_ledger.request_job(user, missing, "image", job_request({**inputs, "model": "assets/nope.png"}))
    generator = TinyGenerator()
    worker = Worker(queue, generator, storage, pg_ledger.reservation_status, JobAttempts(pg_url), options)
    publisher = queue.publisher()
    for job_id in (canceled, missing):
        message = JobRequest.from_event(user, job_id, "image", job_request(inputs), pg_ledger.clock())
        value = message.to_dict()
        if job_id == missing:
            value["inputs"] = {**inputs, "model": "assets/nope.png"}
        publisher.publish(options.topics.requested, str(job_id), value)
    worker.start()
    try:
        wait_until(lambda: sum(worker.loop.outcomes.values()) == 2, 10, "two requests handled")
    finally:
        worker.stop()
    assert worker.loop.outcomes == {"skipped": 1, "failed": 1}
    assert generator.calls == 0
    (result,) = [JobResult.from_dict(m.json_value()) for m in queue.messages(options.topics.results)]
    assert result.job_id == missing
    assert result.error is not None and result.error["code"] == "invalid_input"
    assert result.error["retryable"] is False


def test_the_sweeper_expires_stale_reservations_once(pg_url: str, settings: Settings, inputs: Any) -> None:
    clock = FakeClock()
    ledger = postgres_ledger(settings, pg_url, clock=clock)
    try:
        user = new_user(ledger, credits=2)
        job_id = uuid.uuid4()
        ledger.request_job(user, job_id, "image", job_request(inputs))
        Projector(
            pg_url, poll_interval=1.0
        ).catch_up()  # the sweeper finds its candidates in the jobs read model
        sweeper = Sweeper(pg_url, ledger, timedelta(seconds=60), interval=0.01, clock=clock)
        assert sweeper.sweep() == {}
        clock.advance(seconds=61)
        assert sweeper.sweep() == {user: [job_id]}
        assert sweeper.sweep() == {}
        assert job_status(ledger, user, job_id) == "expired"
        assert ledger.account(user).credits == 2
        sweeper.start()
        sweeper.stop()
        assert sweeper.errors == 0
    finally:
        ledger.close()


class SixteenFpsClip(TinyGenerator):
    """A video backend encoding at its own rate (16 fps, as Wan 2.1 does): 32 frames."""

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.calls += 1
        clip = GeneratedOutput(b"\x00\x00\x00\x18ftypmp42", "video/mp4", 64, 64, frames=32, fps=16)
        return GenerationResult((clip,), "clip", {"total": 0.0})


def test_a_clip_lasts_its_frames_at_the_rate_it_was_encoded_at(
    pg_url: str, pg_ledger: Any, storage: LocalStorage, inputs: Any
) -> None:
    options = PipelineOptions.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    queue = InProcessQueue()
    user = new_user(pg_ledger, credits=10)
    job_id = uuid.uuid4()
    pg_ledger.request_job(user, job_id, "video", job_request(inputs))
    worker = Worker(
        queue, SixteenFpsClip(), storage, pg_ledger.reservation_status, JobAttempts(pg_url), options
    )
    message = JobRequest.from_event(user, job_id, "video", job_request(inputs), pg_ledger.clock())
    queue.publisher().publish(options.topics.requested, str(job_id), message.to_dict())
    worker.start()
    try:
        wait_until(lambda: sum(worker.loop.outcomes.values()) == 1, 10, "the request handled")
    finally:
        worker.stop()
    (result,) = [JobResult.from_dict(m.json_value()) for m in queue.messages(options.topics.results)]
    assert [o["duration"] for o in result.outputs] == [2.0]  # 32 frames at 16 fps, not at 24
