"""`vto serve`'s embedded pipeline: the in-process queue runs jobs in the API's process, and a
restart puts the jobs still queued back on the (new, empty) queue."""

from __future__ import annotations

from typing import Any

from generator_worker.embedded import start_pipeline
from infra.queue.base import PipelineOptions
from infra.queue.memory import InProcessQueue
from pipeline.relay import OutboxRelay
from tests.api_factories import make_user
from tests.test_vto import catalog, job_body, wait_terminal


def test_embedded_pipeline_runs_a_job(client: Any, services: Any) -> None:
    caller = make_user(services)
    services.ledger.grant(caller.id, "test", credits=3)
    items = catalog(client, caller)
    # no Kafka configured: the in-process queue
    pipeline = start_pipeline(services.settings, services.url, services.ledger, services.storage)
    try:
        job = client.post("/api/v1/vto/jobs", json=job_body(items), headers=caller.headers).json()
        done = wait_terminal(client, caller, job["id"])
    finally:
        pipeline.stop()
    assert done["status"] == "succeeded"
    assert client.get(done["outputs"][0]["url"]).status_code == 200
    assert client.get("/api/v1/points", headers=caller.headers).json()["credit"] == 2


def test_a_restart_republishes_the_jobs_still_queued(client: Any, services: Any) -> None:
    caller = make_user(services)
    services.ledger.grant(caller.id, "test", credits=3)
    items = catalog(client, caller)
    job = client.post("/api/v1/vto/jobs", json=job_body(items), headers=caller.headers).json()
    # Before the "crash": the relay published the request to a queue that is then lost.
    lost = InProcessQueue()
    relay = OutboxRelay(services.url, lost.publisher(), PipelineOptions.from_settings(services.settings))
    assert relay.catch_up() >= 1
    assert get_status(client, caller, job["id"]) == "queued"
    # After the restart: a new, empty queue; the relay's position is past the request.
    pipeline = start_pipeline(services.settings, services.url, services.ledger, services.storage)
    try:
        done = wait_terminal(client, caller, job["id"])
    finally:
        pipeline.stop()
    assert done["status"] == "succeeded"


def get_status(client: Any, caller: Any, job_id: str) -> str:
    status: str = client.get(f"/api/v1/vto/jobs/{job_id}", headers=caller.headers).json()["status"]
    return status
