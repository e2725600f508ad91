"""The pipeline against a Kafka broker of its own that is not there yet when the processes
start (each local broker under test), and one that restarts under them (Kafka 0.9 only):
nothing is lost, nothing is applied twice (issue 12).

The restart stays on the 0.9 broker: Tansu's build here (``infra.kafka.tansu``) keeps
everything in memory, so a restart loses the topics, their records and the groups' offsets,
which no client can make up for (docs/kafka.md)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from generator_worker.runtime import Pipeline
from infra.kafka import local, tansu
from infra.kafka.client import KafkaQueue
from infra.queue.base import PipelineOptions
from infra.storage import LocalStorage
from ledger.account import Account
from ledger.application import LedgerApplication
from tests.conftest import LOCAL_BROKERS, brokers_under_test
from tests.factories import ledger_events, new_user
from tests.pipeline.conftest import TinyGenerator, build_pipeline, job_request, job_status, wait_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

Started = local.LocalKafka | tansu.LocalTansu


@pytest.fixture
def broker_dir(kafka_bootstrap: str) -> Iterator[Path]:
    """A run directory for a broker of this test's own (``kafka_bootstrap`` only to skip where
    the session broker cannot start either); whatever was started there is stopped."""
    run_dir = Path(tempfile.mkdtemp(prefix="vto-test-kafka-restart-"))
    try:
        yield run_dir / "run"
    finally:
        resolved = (run_dir / "run").resolve()
        state: Started | None = local.LocalKafka.load(resolved) or tansu.LocalTansu.load(resolved)
        if state is not None:
            state.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


STARTERS: dict[str, Callable[[Path, int], Started]] = {
    "kafka-0.9": lambda run_dir, port: local.start(run_dir, broker_port=port),
    "tansu": lambda run_dir, port: tansu.start(run_dir, port=port),
}


def _loops(pipeline: Pipeline) -> list[Any]:
    return [p.loop for p in (*pipeline.workers, pipeline.ingestor, pipeline.progress) if p is not None]


def _succeeded(ledger: LedgerApplication, user: uuid.UUID, jobs: list[uuid.UUID], what: str) -> None:
    wait_until(lambda: all(job_status(ledger, user, j) == "succeeded" for j in jobs), 150, what)


def _each_succeeded_once(ledger: LedgerApplication, user: uuid.UUID, jobs: list[uuid.UUID]) -> None:
    events = ledger_events(ledger, user)
    for job_id in jobs:
        assert sum(isinstance(e, Account.JobCompleted) and e.job_id == job_id for e in events) == 1
    assert not any(isinstance(e, Account.JobFailed | Account.Refunded) for e in events)
    assert ledger.account(user).credits == 10 - len(jobs)  # each charged once


@pytest.mark.parametrize("kind", [b for b in brokers_under_test() if b in LOCAL_BROKERS])
def test_consumers_wait_for_a_late_broker(
    pg_url: str,
    pg_ledger: LedgerApplication,
    options: PipelineOptions,
    storage: LocalStorage,
    inputs: Any,
    broker_dir: Path,
    kind: str,
) -> None:
    """The processes start before the broker exists: the relay retries its batch, the
    consumers keep trying to start (the API version is detected once the broker answers)."""
    port = local.free_port()
    queue = KafkaQueue(f"127.0.0.1:{port}")
    user = new_user(pg_ledger, credits=10)
    jobs = [uuid.uuid4() for _ in range(3)]
    pipeline = build_pipeline(pg_url, pg_ledger, queue, options, storage, TinyGenerator())
    with pipeline:
        for job_id in jobs:
            pg_ledger.request_job(user, job_id, "image", job_request(inputs))
        STARTERS[kind](broker_dir, port)
        _succeeded(pg_ledger, user, jobs, "the jobs accepted before the broker existed to succeed")
        assert all(loop.running for loop in _loops(pipeline))  # no consumer thread died
    _each_succeeded_once(pg_ledger, user, jobs)


@pytest.mark.skipif("kafka-0.9" not in brokers_under_test(), reason="needs the local 0.9 broker")
def test_the_pipeline_survives_a_broker_restart_that_keeps_its_data(
    pg_url: str,
    pg_ledger: LedgerApplication,
    options: PipelineOptions,
    storage: LocalStorage,
    inputs: Any,
    broker_dir: Path,
) -> None:
    """Kafka 0.9 only (a restart of the memory-only Tansu keeps nothing): jobs accepted while
    the broker is down are published once it is back, and consumers resume from their
    committed offsets."""
    broker = local.start(broker_dir)
    queue = KafkaQueue(broker.bootstrap)
    user = new_user(pg_ledger, credits=10)
    before, during = [uuid.uuid4() for _ in range(3)], [uuid.uuid4() for _ in range(3)]
    pipeline = build_pipeline(pg_url, pg_ledger, queue, options, storage, TinyGenerator())
    with pipeline:
        for job_id in before:
            pg_ledger.request_job(user, job_id, "image", job_request(inputs))
        _succeeded(pg_ledger, user, before, "the jobs accepted before the restart to succeed")
        broker.stop_broker()
        for job_id in during:
            pg_ledger.request_job(user, job_id, "image", job_request(inputs))
        broker.start_broker()
        _succeeded(pg_ledger, user, during, "the jobs accepted while the broker was down to succeed")
        assert all(loop.running for loop in _loops(pipeline))  # no consumer thread died
    _each_succeeded_once(pg_ledger, user, before + during)
