"""The pipeline against a Kafka broker of its own that is not there yet when the processes
start, then restarts under them: nothing is lost, nothing is applied twice (issue 12)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from generator_worker.runtime import Pipeline
from infra.kafka import local
from infra.kafka.client import KafkaQueue
from infra.queue.base import PipelineOptions
from infra.settings import Settings
from infra.storage import LocalStorage
from ledger.account import Account
from ledger.application import LedgerApplication
from tests.factories import ledger_events, new_user
from tests.pipeline.conftest import KAFKA_API_VERSION, TinyGenerator, job_request, job_status, wait_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


@pytest.fixture
def broker_dir(kafka_bootstrap: str) -> Iterator[Path]:
    """A run directory for a broker of this test's own (``kafka_bootstrap`` only to skip where
    the session broker cannot start either); whatever was started there is stopped."""
    run_dir = Path(tempfile.mkdtemp(prefix="vto-test-kafka-restart-"))
    try:
        yield run_dir / "run"
    finally:
        state = local.LocalKafka.load((run_dir / "run").resolve())
        if state is not None:
            state.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def test_consumers_wait_for_a_late_broker_and_survive_its_restart(
    pg_url: str,
    pg_ledger: LedgerApplication,
    options: PipelineOptions,
    storage: LocalStorage,
    inputs: Any,
    broker_dir: Path,
) -> None:
    port = local.free_port()
    queue = KafkaQueue(f"127.0.0.1:{port}", KAFKA_API_VERSION)
    user = new_user(pg_ledger, credits=10)
    before, during = [uuid.uuid4() for _ in range(3)], [uuid.uuid4() for _ in range(3)]
    pipeline = Pipeline.build(
        Settings(_env_file=None),  # type: ignore[call-arg]
        pg_url,
        pg_ledger,
        queue=queue,
        options=options,
        storage=storage,
        generator=TinyGenerator(),
        sweeper=False,
    )
    loops = [p.loop for p in (*pipeline.workers, pipeline.ingestor, pipeline.progress) if p is not None]
    with pipeline:
        for job_id in before:
            pg_ledger.request_job(user, job_id, "image", job_request(inputs))
        # No broker yet: the relay retries its batch, the consumers keep trying to start.
        broker = local.start(broker_dir, broker_port=port)
        wait_until(
            lambda: all(job_status(pg_ledger, user, j) == "succeeded" for j in before),
            120,
            "the jobs accepted before the broker existed to succeed",
        )
        broker.stop_broker()
        for job_id in during:
            pg_ledger.request_job(user, job_id, "image", job_request(inputs))
        broker.start_broker()
        wait_until(
            lambda: all(job_status(pg_ledger, user, j) == "succeeded" for j in during),
            150,
            "the jobs accepted while the broker was down to succeed",
        )
        assert all(loop.running for loop in loops)  # no consumer thread died
    events = ledger_events(pg_ledger, user)
    for job_id in before + during:
        assert sum(isinstance(e, Account.JobCompleted) and e.job_id == job_id for e in events) == 1
    assert not any(isinstance(e, Account.JobFailed | Account.Refunded) for e in events)
    assert pg_ledger.account(user).credits == 10 - len(before) - len(during)  # each charged once
