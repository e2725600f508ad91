"""One job followed across the API, relay, worker and ingestor by its request id and W3C trace
id (``infra.tracing``), on each broker under test: the API records them with the job, the relay
sends them as record headers, the worker and the ingestor read them there. Record headers
need Kafka 0.11: on the 0.9 broker the trace reaches the relay's log and stops (the worker and
the ingestor log ``trace=none``), which is what is asserted there."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest

from generator_worker.runtime import Pipeline
from infra.kafka.client import LEGACY_API_VERSION, KafkaQueue
from infra.queue.base import PipelineOptions
from ledger.account import Account
from tests.api_factories import make_user
from tests.factories import ledger_events
from tests.pipeline.conftest import TinyGenerator, drain
from tests.test_vto import catalog, job_body, wait_terminal

pytestmark = pytest.mark.timeout(120)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def _lines(caplog: pytest.LogCaptureFixture, logger: str, job_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and job_id in r.getMessage()]


def _trace_of(record: Any) -> tuple[str, str, str | None]:
    """(trace id, span id, request id) of a record's headers."""
    headers = {name: value.decode() for name, value in record.headers or []}
    _, trace_id, span_id, _ = headers["traceparent"].split("-")
    return trace_id, span_id, headers.get("x-request-id")


def test_one_job_is_followed_by_its_trace_across_the_processes(
    client: Any,
    services: Any,
    kafka_queue: KafkaQueue,
    options: PipelineOptions,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    caller = make_user(services)
    services.ledger.grant(caller.id, "test", credits=5)
    items = catalog(client, caller)
    headers = {
        **caller.headers,
        "X-Request-ID": "req-trace-1",
        "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
    }
    pipeline = Pipeline.build(
        services.settings,
        services.url,
        services.ledger,
        queue=kafka_queue,
        options=options,
        storage=services.storage,
        generator=TinyGenerator(),
        sweeper=False,
    ).start()
    try:
        response = client.post("/api/v1/vto/jobs", json=job_body(items), headers=headers)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert wait_terminal(client, caller, job_id)["status"] == "succeeded"
    finally:
        pipeline.stop()

    tag = f"request_id=req-trace-1 trace_id={CLIENT_TRACE}"
    access = [json.loads(r.getMessage()) for r in caplog.records if r.name == "vto.access"]
    assert {
        "request_id": "req-trace-1",
        "trace_id": CLIENT_TRACE,
        "route": "/api/v1/vto/jobs",
    }.items() <= next(a for a in access if a["method"] == "POST" and a["route"] == "/api/v1/vto/jobs").items()
    # The relay is at-least-once: a batch whose flush failed (a topic still being created
    # under load) is published again, so the job may be logged, sent and even generated more
    # than once; every copy carries the same trace, and the ingestor applies one result.
    published = _lines(caplog, "pipeline.relay", job_id)
    assert published and all(tag in line for line in published)
    requested_records = drain(kafka_queue, options.topics.requested)
    assert requested_records and {r.key.decode() for r in requested_records} == {job_id}
    requested = requested_records[0]
    result, *_ = drain(kafka_queue, options.topics.results)
    worker = _lines(caplog, "generator_worker.worker", job_id)
    ingested = _lines(caplog, "pipeline.ingestor", job_id)
    assert ingested
    assert any(") started (" in line for line in worker)
    assert any(" succeeded (" in line for line in worker)
    if kafka_queue.client_api_version() == LEGACY_API_VERSION:  # no record headers before 0.11
        assert not any(r.headers for r in requested_records) and not result.headers
        assert all("trace=none" in line for line in [*worker, *ingested])
        return
    assert all(tag in line for line in [*worker, *ingested])
    relay_trace, relay_span, relay_request = _trace_of(requested)
    worker_trace, worker_span, worker_request = _trace_of(result)
    assert relay_trace == worker_trace == CLIENT_TRACE
    assert relay_request == worker_request == "req-trace-1"
    assert len({CLIENT_SPAN, relay_span, worker_span}) == 3  # each hop a span of its own
    (progress, *_) = drain(kafka_queue, options.topics.progress)
    assert _trace_of(progress)[0] == CLIENT_TRACE


def test_a_retry_under_another_request_id_is_the_same_job(client: Any, services: Any) -> None:
    """Where a request came from is recorded with the job but is not part of what was asked:
    an idempotent retry with another request id (and a trace header that is not valid, which
    starts a new trace) is the same job, charged once; the first request's trace stays."""
    caller = make_user(services)
    services.ledger.grant(caller.id, "test", credits=5)
    items = catalog(client, caller)
    first = client.post(
        "/api/v1/vto/jobs",
        json=job_body(items),
        headers={**caller.headers, "Idempotency-Key": "k1", "X-Request-ID": "first-try"},
    )
    again = client.post(
        "/api/v1/vto/jobs",
        json=job_body(items),
        headers={
            **caller.headers,
            "Idempotency-Key": "k1",
            "X-Request-ID": "second-try",
            "traceparent": "00-not-a-trace-at-all",
        },
    )
    assert first.status_code == again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["X-Request-ID"] == "second-try"
    (requested,) = [
        e for e in ledger_events(services.ledger, caller.id) if isinstance(e, Account.JobRequested)
    ]
    assert requested.request["trace"]["request_id"] == "first-try"
    assert uuid.UUID(str(requested.job_id)) == uuid.UUID(first.json()["id"])
    assert services.ledger.account(caller.id).credits == 4
