"""Operations: liveness, readiness, metrics, request ids, and a busy database answered 503."""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine

from benchmarks.chaos import Deployment
from command_api.deps import get_services
from command_api.ops.metrics import MULTIPROCESS_DIR, shared_across_processes
from infra.database import sqlalchemy_url
from infra.db import make_sessionmaker
from tests.api_factories import make_user
from tests.infra.test_shutdown import sign_in, wait_until


def test_health_ready_and_metrics(client: Any, services: Any) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    caller = make_user(services)
    client.get("/api/v1/points", headers=caller.headers)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert 'vto_http_request_duration_seconds_count{method="GET",route="/api/v1/points",status="200"}' in text
    assert 'vto_projection_lag_events{projection="points"} 0.0' in text
    assert "vto_ledger_conflict_retries" in text
    client.get(f"/api/v1/projects/{caller.id}", headers=caller.headers)  # 404, matched route
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert 'route="/api/v1/projects/{id}",status="404"' in text
    assert 'route="unmatched",status="404"' in text


def test_request_ids_are_returned_and_kept(client: Any) -> None:
    given = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz").headers["X-Request-ID"]
    assert len(made) == 32


def test_readiness_fails_when_projections_stop(client: Any, services: Any) -> None:
    services.projector.stop()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["code"] == "not_ready"
    assert "stopped" in response.json()["checks"]["projections"]


def test_a_busy_database_is_a_503_problem_not_a_500(client: Any, services: Any, pg_url: str) -> None:
    caller = make_user(services)
    # A real pool of one connection, held elsewhere: the request cannot get one in time.
    engine = create_engine(sqlalchemy_url(pg_url), pool_size=1, max_overflow=0, pool_timeout=0.2)
    busy = type(services)(**{**services.__dict__, "engine": engine, "sessions": make_sessionmaker(engine)})
    client.app.dependency_overrides[get_services] = lambda: busy
    held = engine.connect()
    try:
        response = client.get("/api/v1/points", headers=caller.headers)
    finally:
        held.close()
        client.app.dependency_overrides.clear()
        engine.dispose()
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "database_unavailable"
    assert response.headers["Retry-After"] == "1"
    assert client.get("/api/v1/points", headers=caller.headers).status_code == 200


def test_a_client_request_id_is_kept_only_when_it_is_a_short_safe_token(client: Any) -> None:
    for unsafe in ("a" * 65, "abc def", "abc\u00e9", "x;drop", '{"forged": "log line"}', ""):
        given = client.get("/healthz", headers={"X-Request-ID": unsafe.encode()})
        made = given.headers["X-Request-ID"]
        assert made != unsafe and len(made) == 32 and made.isalnum()
    kept = "Order-7.retry_2"
    assert client.get("/healthz", headers={"X-Request-ID": kept}).headers["X-Request-ID"] == kept


def test_unknown_paths_and_methods_add_no_metric_series(client: Any) -> None:
    """Labels come from route templates: fifty random paths (and invented methods) add none."""
    client.get("/no/such/path")
    client.request("BREW", "/healthz")
    client.request("BREW", "/no/such/path")
    client.get("/metrics")  # its own series, before the first count

    def series() -> set[str]:
        text = client.get("/metrics").text
        return {
            line.split(" ")[0] for line in text.splitlines() if line.startswith("vto_http_request_duration")
        }

    before = series()
    for _ in range(50):
        client.get(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}")
        client.request(f"X{uuid.uuid4().hex[:8].upper()}", f"/api/v1/{uuid.uuid4().hex}")
    assert series() == before


# ------------------------------------------------------------------ read-your-writes waits
def _waits(text: str) -> tuple[float, float, float]:
    """``vto_read_your_writes_wait_seconds``: (count, sum, count in the ``le="0.0"`` bucket)."""
    values = {}
    for line in text.splitlines():
        if line.startswith("vto_read_your_writes_wait_seconds"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return (
        values["vto_read_your_writes_wait_seconds_count"],
        values["vto_read_your_writes_wait_seconds_sum"],
        values['vto_read_your_writes_wait_seconds_bucket{le="0.0"}'],
    )


def test_read_your_writes_waits_are_measured(client: Any, services: Any, pg_url: str) -> None:
    """A read whose writes the read models show already waited 0; one that must wait for the
    projections is observed with how long it waited."""
    caller = make_user(services)
    wait_until(lambda: services.projector.position() >= (services.ledger.position() or 0), 30, "projections")
    count, total, zero = _waits(client.get("/metrics").text)
    assert client.get("/api/v1/points", headers=caller.headers).status_code == 200
    after = _waits(client.get("/metrics").text)
    assert after == (count + 1, total, zero + 1)

    held_for = 0.3  # how long the projection is held back: the wait to be measured
    with psycopg.connect(pg_url) as conn:  # the points runner waits for this lock
        conn.execute("SELECT 1 FROM projection_tracking WHERE name = 'points' FOR UPDATE")
        services.ledger.grant_credits(caller.id, 5, "test")
        with ThreadPoolExecutor(1) as pool:
            read = pool.submit(client.get, "/api/v1/points", headers=caller.headers)
            time.sleep(held_for)
            conn.rollback()
            assert read.result(timeout=30).json()["credit"] == 5
    count, total, zero = _waits(client.get("/metrics").text)
    assert (count, zero) == (after[0] + 1, after[2])
    assert 0 < total - after[1] < services.settings.read_your_writes_timeout_s  # it waited


@pytest.mark.slow
def test_metrics_of_api_workers_are_shown_together(pg_url: str, tmp_path: Path) -> None:
    """``vto api --workers 2``: whichever worker answers ``/metrics``, it shows the requests
    of both (prometheus_client's multiprocess mode, one value file per worker)."""
    shared = tmp_path / "metrics"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VTO_")},
        "VTO_DATABASE_URL": pg_url,
        "VTO_DATA_DIR": str(tmp_path / "data"),
        "VTO_JWT_SECRET": "metrics-" + "m" * 32,
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
    }
    deployment = Deployment(tmp_path, env, apis=1, workers=0)
    deployment.commands["api-0"] += ["--workers", "2"]
    base = f"http://127.0.0.1:{deployment.ports['api-0']}"
    try:
        for name in ("projector", "api-0"):
            deployment.start(name)
        deployment.wait_api("api-0")
        with httpx.Client(base_url=base, timeout=60) as api:
            caller = sign_in(api, "metrics@workers.example.com")
            wait_until(
                lambda: api.get("/api/v1/points", headers=caller.headers).status_code == 200, 60, "points"
            )

        def waits() -> float:  # a connection of its own each time: either worker may answer
            return _waits(httpx.get(f"{base}/metrics", timeout=60).text)[0]

        before = waits()
        reads = 40
        for _ in range(reads):
            assert httpx.get(f"{base}/api/v1/points", headers=caller.headers, timeout=60).status_code == 200
        workers = {path.stem.split("_")[-1] for path in shared.glob("histogram_*.db")}
        assert len(workers) == 2, f"the reads were not served by both workers: {sorted(workers)}"
        assert [waits() for _ in range(8)] == [before + reads] * 8
        statuses = deployment.stop_all()
        assert statuses == dict.fromkeys(deployment.processes, 0), f"logs in {deployment.logs}"
    finally:
        deployment.kill_all()


def test_api_workers_share_a_metrics_directory_while_they_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(MULTIPROCESS_DIR, raising=False)
    with shared_across_processes() as made:
        assert os.environ[MULTIPROCESS_DIR] == str(made) and made.is_dir()
    assert MULTIPROCESS_DIR not in os.environ and not made.exists()
    given = tmp_path / "given"  # the operator's: its value files of an earlier run go
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    (given / "notes.txt").write_text("kept")
    monkeypatch.setenv(MULTIPROCESS_DIR, str(given))
    with shared_across_processes() as used:
        assert used == given and not (given / "counter_123.db").exists()
    assert (given / "notes.txt").exists() and os.environ[MULTIPROCESS_DIR] == str(given)
