"""The job pipeline against each Kafka broker under test and real PostgreSQL: outbox relay,
worker, result ingestor, progress recorder, dead letters, poison jobs, the job timeout,
consumer groups (a killed worker replaced, long jobs versus the session timeout and a
rebalance); and the in-process queue compared with Kafka on one end-to-end job.

Every test takes ``kafka_queue`` and so runs once per broker (``kafka_broker``: the local
Kafka 0.9 and Tansu, the modern protocol; docs/kafka.md); the clients detect the API version.
Where the two protocols differ (a rebalance during a long job), the test says what each does.
A broker restart that keeps data is in ``test_pipeline_broker_restart.py`` (0.9 only)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka.partitioner.default import murmur2

from generator_worker.attempts import JobAttempts
from generator_worker.generation import build_generator
from generator_worker.runtime import Pipeline
from generator_worker.worker import Worker
from infra.kafka.client import LEGACY_API_VERSION, KafkaQueue
from infra.queue.base import ConsumerConfig, Message, PipelineOptions
from infra.queue.memory import InProcessQueue
from infra.storage import LocalStorage
from ledger.account import Account
from ledger.application import LedgerApplication
from pipeline.consume import ConsumerLoop
from pipeline.ingestor import Ingestor
from pipeline.messages import DeadLetter, JobRequest, JobResult
from pipeline.relay import OutboxRelay
from tests.factories import ledger_events, new_user
from tests.pipeline.conftest import (
    TinyGenerator,
    build_pipeline,
    drain,
    job_request,
    job_status,
    partition_count,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


def test_relay_publishes_each_request_once_across_a_restart(
    pg_url: str, pg_ledger: LedgerApplication, kafka_queue: KafkaQueue, options: PipelineOptions, inputs: Any
) -> None:
    user = new_user(pg_ledger, credits=10)
    jobs = [uuid.uuid4() for _ in range(5)]
    for job_id in jobs[:3]:
        pg_ledger.request_job(user, job_id, "image", job_request(inputs))

    first = OutboxRelay(pg_url, kafka_queue.publisher(), options)
    assert first.catch_up() > 0
    first.stop()  # a restart: the next relay starts from the committed position
    for job_id in jobs[3:]:
        pg_ledger.request_job(user, job_id, "image", job_request(inputs))
    second = OutboxRelay(pg_url, kafka_queue.publisher(), options)
    second.catch_up()
    assert second.published == 2
    second.stop()

    records = drain(kafka_queue, options.topics.requested)
    assert sorted(r.key.decode() for r in records) == sorted(str(j) for j in jobs)
    message = next(r for r in records if r.key.decode() == str(jobs[0]))
    value = json.loads(message.value)
    assert value["user_id"] == str(user)
    assert value["kind"] == "image"
    assert value["inputs"] == inputs
    assert value["options"]["width"] == 192
    assert value["project_id"] and value["requested_at"]


def _recorded_progress(url: str, job_id: uuid.UUID) -> float | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT progress FROM job_progress WHERE job_id = %s", (job_id,)).fetchone()
    return None if row is None else float(row[0])


def _run_one_job(
    url: str,
    ledger: LedgerApplication,
    queue: Any,
    options: PipelineOptions,
    storage: LocalStorage,
    inputs: Any,
    generator: Any,
) -> tuple[uuid.UUID, uuid.UUID, list[dict[str, Any]]]:
    user = new_user(ledger, credits=3)
    job_id = uuid.uuid4()
    with build_pipeline(url, ledger, queue, options, storage, generator):
        ledger.request_job(user, job_id, "image", job_request(inputs))
        wait_until(lambda: job_status(ledger, user, job_id) == "succeeded", 60, "the job to succeed")
        # The progress recorder took the worker's progress messages (its own consumer group,
        # which may still be at it when the job's result is in).
        wait_until(lambda: _recorded_progress(url, job_id) == 1.0, 30, "the progress recorded")
    completed = [e for e in ledger_events(ledger, user) if isinstance(e, Account.JobCompleted)]
    assert len(completed) == 1
    assert ledger.account(user).credits == 2  # charged once, settled
    return user, job_id, list(completed[0].outputs)


def test_end_to_end_on_kafka_and_in_process_queue_agree(
    pg_url: str,
    pg_ledger: LedgerApplication,
    kafka_queue: KafkaQueue,
    options: PipelineOptions,
    storage: LocalStorage,
    inputs: Any,
) -> None:
    generator = build_generator("offline")
    try:
        user, job_id, outputs = _run_one_job(
            pg_url, pg_ledger, kafka_queue, options, storage, inputs, generator
        )
        assert len(outputs) == 1
        output = outputs[0]
        assert output["storage_key"] == f"outputs/{user}/{job_id}/0.png"
        assert (output["media_type"], output["width"], output["height"]) == ("image/png", 192, 256)
        kafka_bytes = storage.get(output["storage_key"])
        assert output["size"] == len(kafka_bytes)
        progress = drain(kafka_queue, options.topics.progress)
        assert {r.key.decode() for r in progress} == {str(job_id)}
        results = drain(kafka_queue, options.topics.results)
        assert [r.key.decode() for r in results] == [str(job_id)]

        memory = InProcessQueue()
        _, _, outputs2 = _run_one_job(pg_url, pg_ledger, memory, options, storage, inputs, generator)
    finally:
        generator.close()
    assert [{k: v for k, v in o.items() if k != "storage_key"} for o in outputs2] == [
        {k: v for k, v in o.items() if k != "storage_key"} for o in outputs
    ]
    assert storage.get(outputs2[0]["storage_key"]) == kafka_bytes  # same seed, same picture
    assert len(memory.messages(options.topics.results)) == 1
    assert len(memory.messages(options.topics.requested)) == 1


def test_with_failure_rate_one_every_job_fails_and_is_refunded_once(
    pg_url: str,
    pg_ledger: LedgerApplication,
    kafka_queue: KafkaQueue,
    options: PipelineOptions,
    storage: LocalStorage,
    inputs: Any,
) -> None:
    user = new_user(pg_ledger, credits=4)
    jobs = [uuid.uuid4() for _ in range(3)]
    generator = build_generator("offline", failure_rate=1.0)
    with build_pipeline(pg_url, pg_ledger, kafka_queue, replace(options, max_attempts=3), storage, generator):
        for job_id in jobs:
            pg_ledger.request_job(user, job_id, "image", job_request(inputs))
        wait_until(
            lambda: all(job_status(pg_ledger, user, j) == "failed" for j in jobs), 60, "every job to fail"
        )
    events = ledger_events(pg_ledger, user)
    for job_id in jobs:
        failed = [e for e in events if isinstance(e, Account.JobFailed) and e.job_id == job_id]
        refunds = [e for e in events if isinstance(e, Account.Refunded) and e.job_id == job_id]
        assert len(failed) == 1 and len(refunds) == 1
        assert failed[0].error == {
            "code": "injected_failure",
            "message": failed[0].error["message"],
            "retryable": True,
        }
    assert pg_ledger.account(user).credits == 4
    assert not any(isinstance(e, Account.JobCompleted) for e in events)
    # Past its attempts, each request went to the dead-letter topic with the reason.
    letters = [
        DeadLetter.from_dict(json.loads(r.value)) for r in drain(kafka_queue, options.topics.dead_letter)
    ]
    assert sorted(letter.key or "" for letter in letters) == sorted(str(j) for j in jobs)
    for letter in letters:
        assert (letter.reason, letter.attempts, letter.source_topic) == (
            "attempts_exhausted",
            3,
            options.topics.requested,
        )
        assert letter.error.startswith("injected_failure")
        assert JobRequest.from_dict(json.loads(letter.value)).job_id == uuid.UUID(letter.key)


def _same_partition(count: int, partitions: int) -> list[uuid.UUID]:
    """Job ids whose keys land in one partition (Kafka's default partitioner)."""
    chosen: list[uuid.UUID] = []
    while len(chosen) < count:
        job_id = uuid.uuid4()
        if (murmur2(str(job_id).encode()) & 0x7FFFFFFF) % partitions == 0:
            chosen.append(job_id)
    return chosen


def _a_bad_job_and_one_behind_it(
    url: str,
    ledger: LedgerApplication,
    queue: KafkaQueue,
    options: PipelineOptions,
    storage: LocalStorage,
    inputs: Any,
    generator: Any,
) -> tuple[uuid.UUID, uuid.UUID, Pipeline]:
    """A user with 3 credits orders a job with seed 666 (what ``generator`` fails on), then a
    job behind it in the same partition; waits until the bad one failed and the other
    succeeded. Returns (user, bad job, the stopped pipeline)."""
    user = new_user(ledger, credits=3)
    bad, behind = _same_partition(2, partition_count(queue, options.topics.requested))
    with build_pipeline(url, ledger, queue, options, storage, generator) as pipeline:
        ledger.request_job(user, bad, "image", job_request(inputs, seed=666))
        ledger.request_job(user, behind, "image", job_request(inputs))
        wait_until(
            lambda: (
                job_status(ledger, user, bad) == "failed" and job_status(ledger, user, behind) == "succeeded"
            ),
            60,
            "the bad job to fail and the job behind it to succeed",
        )
    return user, bad, pipeline


def test_a_poison_garment_fails_refunded_and_unblocks_its_partition(
    pg_url: str,
    pg_ledger: LedgerApplication,
    kafka_queue: KafkaQueue,
    options: PipelineOptions,
    storage: LocalStorage,
    inputs: Any,
) -> None:
    """A generator that raises what no backend declares (here ``IndexError``, as the garment
    fitting did on issue 12's image) fails that job at once, refunded; the job behind it in the
    same partition succeeds."""

    class Poisoned(TinyGenerator):
        def generate(self, request: Any) -> Any:
            if request.options.seed == 666:
                raise IndexError("index 904 is out of bounds for axis 1 with size 900")
            return super().generate(request)

    user, _, pipeline = _a_bad_job_and_one_behind_it(
        pg_url, pg_ledger, kafka_queue, options, storage, inputs, Poisoned()
    )
    (failed,) = [e for e in ledger_events(pg_ledger, user) if isinstance(e, Account.JobFailed)]
    assert failed.error["code"] == "internal_error" and failed.error["retryable"] is False
    assert pg_ledger.account(user).credits == 2
    assert pipeline.workers[0].loop.errors == 0  # never rewound
    (letter,) = drain(kafka_queue, options.topics.dead_letter)
    assert json.loads(letter.value)["reason"] == "internal_error"


def test_a_result_delivered_twice_has_one_effect(
    pg_ledger: LedgerApplication, kafka_queue: KafkaQueue, options: PipelineOptions, inputs: Any
) -> None:
    user = new_user(pg_ledger, credits=2)
    job_id = uuid.uuid4()
    pg_ledger.request_job(user, job_id, "image", job_request(inputs))
    output = {"storage_key": "outputs/x.png", "media_type": "image/png", "width": 1, "height": 1}
    success = JobResult.succeeded(job_id, user, [output]).to_dict()
    late_failure = JobResult.failed(job_id, user, "resource_error", "late", True).to_dict()
    publisher = kafka_queue.publisher()
    for value in (success, success, late_failure):
        publisher.publish(options.topics.results, str(job_id), value)
    publisher.flush(10)
    publisher.close()

    ingestor = Ingestor(kafka_queue, pg_ledger, options).start()
    try:
        wait_until(lambda: sum(ingestor.loop.outcomes.values()) == 3, 30, "three results ingested")
    finally:
        ingestor.stop()
    assert ingestor.loop.outcomes == {"applied": 1, "duplicate": 2}
    events = ledger_events(pg_ledger, user)
    assert sum(isinstance(e, Account.JobCompleted) for e in events) == 1
    assert not any(isinstance(e, Account.JobFailed | Account.Refunded) for e in events)
    assert pg_ledger.account(user).credits == 1


def test_undecodable_messages_go_to_the_dead_letter_topic(
    pg_url: str,
    pg_ledger: LedgerApplication,
    kafka_queue: KafkaQueue,
    options: PipelineOptions,
    storage: LocalStorage,
) -> None:
    publisher = kafka_queue.publisher()
    publisher.publish_raw(options.topics.requested, "bad-request", b"\xff{not json")
    publisher.publish(options.topics.results, "bad-result", {"job_id": "nope", "status": "succeeded"})
    publisher.flush(10)
    publisher.close()
    worker = Worker(
        kafka_queue, TinyGenerator(), storage, pg_ledger.reservation_status, JobAttempts(pg_url), options
    ).start()
    ingestor = Ingestor(kafka_queue, pg_ledger, options).start()
    try:
        wait_until(
            lambda: worker.loop.outcomes["dead_letter"] == 1 and ingestor.loop.outcomes["dead_letter"] == 1,
            30,
            "both messages dead-lettered",
        )
    finally:
        worker.stop()
        ingestor.stop()
    letters = {r.key.decode(): json.loads(r.value) for r in drain(kafka_queue, options.topics.dead_letter)}
    assert set(letters) == {"bad-request", "bad-result"}
    assert letters["bad-request"]["source_topic"] == options.topics.requested
    assert letters["bad-request"]["value_base64"]
    assert letters["bad-result"]["error"].startswith("InvalidMessage")


def _job_ids_covering(partitions: int) -> list[uuid.UUID]:
    """Job ids whose keys land in every partition (Kafka's default partitioner)."""
    chosen: dict[int, uuid.UUID] = {}
    while len(chosen) < partitions:
        job_id = uuid.uuid4()
        p = (murmur2(str(job_id).encode()) & 0x7FFFFFFF) % partitions
        chosen.setdefault(p, job_id)
    return list(chosen.values())


def test_two_workers_in_one_group_split_the_jobs(
    pg_url: str,
    pg_ledger: LedgerApplication,
    kafka_queue: KafkaQueue,
    options: PipelineOptions,
    storage: LocalStorage,
    inputs: Any,
) -> None:
    user = new_user(pg_ledger, credits=20)
    generator = TinyGenerator()
    # Every consumer makes its topics exist (4 partitions, auto-created) before it joins its
    # group (``KafkaQueue.ensure_topics``), so each group's first assignment covers them all.
    partitions = partition_count(kafka_queue, options.topics.requested)
    pipeline = build_pipeline(pg_url, pg_ledger, kafka_queue, options, storage, generator, workers=2)
    with pipeline:
        wait_until(
            lambda: (
                sorted(len(w.loop.assignment()) for w in pipeline.workers)
                == [partitions // 2, partitions - partitions // 2]
            ),
            30,
            "both workers assigned",
        )
        jobs = _job_ids_covering(partitions)
        for job_id in jobs:
            pg_ledger.request_job(user, job_id, "image", job_request(inputs))
        wait_until(
            lambda: all(job_status(pg_ledger, user, j) == "succeeded" for j in jobs),
            60,
            "all jobs to succeed",
        )
    first, second = (set(w.jobs) for w in pipeline.workers)
    assert first and second
    assert first | second == set(jobs)
    assert not first & second
    assert generator.calls == len(jobs)


def test_a_job_longer_than_the_session_timeout_keeps_its_member(
    kafka_queue: KafkaQueue, options: PipelineOptions
) -> None:
    """Heartbeats go on while a message is handled, and the member is not evicted before its
    max poll interval (on this 0.9 broker too, whose protocol knows only the session)."""
    config = ConsumerConfig(
        max_poll_records=1, max_poll_interval_ms=60_000, session_timeout_ms=2_000, heartbeat_interval_ms=500
    )
    topic, group = options.topics.requested, options.worker_group
    publisher = kafka_queue.publisher()
    for i in range(2):
        publisher.publish(topic, "same-key", {"i": i})
    publisher.flush(10)
    publisher.close()
    handled: list[int] = []

    def handle(message: Message) -> str:
        handled.append(message.json_value()["i"])
        if len(handled) == 1:
            threading.Event().wait(5)  # the fault under test: a job of 2.5 session timeouts
        return "ok"

    loop = ConsumerLoop(
        "long-jobs",
        lambda: kafka_queue.consumer([topic], group, config),
        handle,
        poll_timeout=0.2,
        max_records=1,
    )
    loop.start()
    try:
        wait_until(lambda: loop.outcomes["ok"] == 2, 60, "both messages handled")
    finally:
        loop.stop()
    assert loop.commit_failures == 0
    assert handled == [0, 1]  # nothing delivered twice: the member kept its partition


def test_a_job_past_the_job_timeout_is_abandoned_refunded_and_unblocks_its_partition(
    pg_url: str,
    pg_ledger: LedgerApplication,
    kafka_queue: KafkaQueue,
    options: PipelineOptions,
    storage: LocalStorage,
    inputs: Any,
) -> None:
    release = threading.Event()

    class Stuck(TinyGenerator):
        def generate(self, request: Any) -> Any:
            if request.options.seed == 666:
                release.wait(60)  # the fault under test: a generation that never ends in time
            return super().generate(request)

    try:
        user, slow, pipeline = _a_bad_job_and_one_behind_it(
            pg_url, pg_ledger, kafka_queue, replace(options, job_timeout_s=1.0), storage, inputs, Stuck()
        )
    finally:
        release.set()
    assert pipeline.workers[0].abandoned == 1
    (failed,) = [e for e in ledger_events(pg_ledger, user) if isinstance(e, Account.JobFailed)]
    assert (failed.job_id, failed.error["code"], failed.error["retryable"]) == (slow, "timeout", False)
    assert pg_ledger.account(user).credits == 2  # the slow job refunded, the other charged
    (letter,) = drain(kafka_queue, options.topics.dead_letter)
    assert json.loads(letter.value)["reason"] == "timeout"


# A worker killed mid-job: joins the group, takes a request, never finishes it (it stops polling
# while its heartbeat thread goes on, as a busy worker does) until it is killed with SIGKILL (no
# LeaveGroup: only the missing heartbeats tell the broker).
_HOLDER = textwrap.dedent(
    """
    import sys, threading
    from infra.kafka.client import KafkaQueue
    from infra.queue.base import ConsumerConfig
    bootstrap, topic, group, session, heartbeat, interval = sys.argv[1:7]
    config = ConsumerConfig(1, int(interval), int(session), int(heartbeat))
    consumer = KafkaQueue(bootstrap).consumer([topic], group, config)
    announced = False
    while True:
        if not announced and consumer.assignment():
            print("assigned", flush=True)
            announced = True
        batch = consumer.poll(0.2, 1)
        if batch:
            print("holding", batch[0].key, flush=True)
            threading.Event().wait()
    """
)


@pytest.fixture
def holder(kafka_queue: KafkaQueue, options: PipelineOptions) -> Iterator[subprocess.Popen[str]]:
    config = options.worker_consumer
    args = [kafka_queue.bootstrap_servers[0], options.topics.requested, options.worker_group]
    args += [
        str(config.session_timeout_ms),
        str(config.heartbeat_interval_ms),
        str(config.max_poll_interval_ms),
    ]
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, *args],
        cwd=Path(__file__).resolve().parents[2],  # the repository: ``infra`` imports
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    yield process
    process.kill()
    process.wait(10)


def test_a_killed_worker_is_replaced_within_its_session_timeout(
    pg_url: str,
    pg_ledger: LedgerApplication,
    kafka_queue: KafkaQueue,
    options: PipelineOptions,
    storage: LocalStorage,
    inputs: Any,
    holder: subprocess.Popen[str],
) -> None:
    """The member holding a job is killed; the broker notices within the session timeout (not
    the long max poll interval a job may take) and the other worker takes the job over: it
    succeeds, charged once."""
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "assigned"
    user = new_user(pg_ledger, credits=2)
    job_id = uuid.uuid4()
    pg_ledger.request_job(user, job_id, "image", job_request(inputs))
    relay = OutboxRelay(pg_url, kafka_queue.publisher(), options)
    relay.catch_up()
    relay.stop()
    assert holder.stdout.readline().split() == ["holding", str(job_id)]

    partitions = partition_count(kafka_queue, options.topics.requested)
    with build_pipeline(
        pg_url, pg_ledger, kafka_queue, options, storage, TinyGenerator(), relay=False
    ) as pipeline:
        (survivor,) = pipeline.workers
        wait_until(lambda: survivor.loop.consumers_started, 30, "the other worker to start joining")
        holder.kill()
        killed = time.monotonic()
        wait_until(
            lambda: len(survivor.loop.assignment()) == partitions,
            60,
            "the other worker to take every partition",
        )
        noticed = time.monotonic() - killed
        wait_until(lambda: job_status(pg_ledger, user, job_id) == "succeeded", 60, "the job to succeed")
    session_s = options.worker_consumer.session_timeout_ms / 1000
    assert noticed < session_s + 10, f"the killed member was noticed after {noticed:.1f} s"
    assert survivor.jobs == [job_id]
    assert pg_ledger.account(user).credits == 1
    assert sum(isinstance(e, Account.JobCompleted) for e in ledger_events(pg_ledger, user)) == 1


def test_a_long_job_during_a_rebalance(kafka_queue: KafkaQueue, options: PipelineOptions) -> None:
    """A member busy with a job for 2.5 session timeouts while another member joins. From Kafka
    0.10.1 (KIP-62; Tansu) the rebalance waits for the busy member up to its max poll interval:
    it commits and nothing is handled twice. A 0.9 broker waits one session timeout only: the
    busy member's commit fails (counted), and the message is handled again by the other member
    (every consumer deduplicates)."""
    config = ConsumerConfig(
        max_poll_records=1, max_poll_interval_ms=60_000, session_timeout_ms=2_000, heartbeat_interval_ms=500
    )
    topic, group = options.topics.requested, options.worker_group
    partitions = partition_count(kafka_queue, topic)
    publisher = kafka_queue.publisher()
    for i in range(2):
        publisher.publish(topic, "same-key", {"i": i})
    publisher.flush(10)
    publisher.close()
    handled: list[tuple[str, int]] = []
    busy = threading.Event()

    def loop(name: str) -> ConsumerLoop:
        def handle(message: Message) -> str:
            handled.append((name, message.json_value()["i"]))
            if name == "first" and not busy.is_set():
                busy.set()
                threading.Event().wait(5)  # the fault under test: a job of 2.5 session timeouts
            return "ok"

        return ConsumerLoop(
            name,
            lambda: kafka_queue.consumer([topic], group, config),
            handle,
            poll_timeout=0.2,
            max_records=1,
        )

    first, second = loop("first"), loop("second")
    first.start()
    try:
        wait_until(lambda: len(first.assignment()) == partitions, 30, "the first member to own the topic")
        wait_until(busy.is_set, 30, "the first member to start its long job")
        second.start()  # joins while the first is busy: a rebalance
        legacy = kafka_queue.client_api_version() == LEGACY_API_VERSION
        wait_until(
            lambda: first.outcomes["ok"] + second.outcomes["ok"] >= (3 if legacy else 2),
            60,
            "the messages handled",
        )
    finally:
        second.stop()
        first.stop()
    numbers = sorted(i for _, i in handled)
    if legacy:
        assert first.commit_failures == 1
        assert numbers == [0, 0, 1]
        assert ("second", 0) in handled
    else:
        assert first.commit_failures == second.commit_failures == 0
        assert numbers == [0, 1]
        assert handled[0] == ("first", 0)
