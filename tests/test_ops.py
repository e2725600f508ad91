"""Operations: liveness, readiness, metrics, request ids, and a busy database answered 503."""

from __future__ import annotations

import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from benchmarks.chaos import Deployment
from command_api.deps import get_services
from command_api.ops.metrics import MULTIPROCESS_DIR, shared_across_processes
from infra.database import sqlalchemy_url
from infra.orm import make_sessionmaker
from infra.settings import Settings
from tests.api_factories import make_user
from tests.infra.test_shutdown import sign_in, wait_until

OPS_TOKEN = "operator-token-0123456789abcdef"
OPERATOR = {"Authorization": f"Bearer {OPS_TOKEN}"}


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    """The API's settings with an operator token (``/metrics``, the detail of ``/readyz``)."""
    return Settings(_env_file=None, data_dir=tmp_path / "data", ops_token=OPS_TOKEN)  # type: ignore[call-arg]


def test_health_ready_and_metrics(client: Any, services: Any) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    caller = make_user(services)
    client.get("/api/v1/points", headers=caller.headers)
    metrics = client.get("/metrics", headers=OPERATOR)
    assert metrics.status_code == 200
    text = metrics.text
    assert 'vto_http_request_duration_seconds_count{method="GET",route="/api/v1/points",status="200"}' in text
    assert 'vto_projection_lag_events{projection="points"} 0.0' in text
    assert "vto_ledger_conflict_retries" in text
    client.get(f"/api/v1/projects/{caller.id}", headers=caller.headers)  # 404, matched route
    client.get("/no/such/path")
    text = client.get("/metrics", headers=OPERATOR).text
    assert 'route="/api/v1/projects/{id}",status="404"' in text
    assert 'route="unmatched",status="404"' in text


def test_request_ids_are_returned_and_kept(client: Any) -> None:
    given = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz").headers["X-Request-ID"]
    assert len(made) == 32


def test_readiness_fails_when_projections_stop(client: Any, services: Any) -> None:
    services.projector.stop()
    response = client.get("/readyz", headers=OPERATOR)
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
    client.get("/metrics", headers=OPERATOR)  # its own series, before the first count

    def series() -> set[str]:
        text = client.get("/metrics", headers=OPERATOR).text
        return {
            line.split(" ")[0] for line in text.splitlines() if line.startswith("vto_http_request_duration")
        }

    before = series()
    for _ in range(50):
        client.get(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}")
        client.request(f"X{uuid.uuid4().hex[:8].upper()}", f"/api/v1/{uuid.uuid4().hex}")
    assert series() == before


# --- attack 9 and "also seen": headers, CORS, operators' routes ---------------------------------
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
}


def assert_security_headers(response: Any, *, tls: bool = False) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.request.url, name, dict(response.headers))
    if tls:
        assert response.headers["strict-transport-security"].startswith("max-age=")
    else:
        assert "strict-transport-security" not in response.headers


def test_every_response_carries_the_security_headers(client: Any, services: Any) -> None:
    caller = make_user(services)

    @client.app.get("/test-only/boom")
    def boom() -> None:
        raise RuntimeError("an unexpected failure")

    responses = [
        client.get("/healthz"),
        client.get("/readyz"),
        client.get("/api/v1/users/me", headers=caller.headers),
        client.get("/api/v1/users/me"),  # 401
        client.get("/no/such/path"),  # 404
        client.post("/api/v1/collections", json={"name": "x" * 300}, headers=caller.headers),  # 422
        client.post("/api/v1/collections", content=b"x" * (2 << 20), headers=caller.headers),  # 413
        client.request("BREW", "/healthz"),  # 405
        client.get("/docs"),
        client.get("/openapi.json"),
    ]
    for response in responses:
        assert_security_headers(response)
    with TestClient(client.app, raise_server_exceptions=False) as plain:
        failed = plain.get("/test-only/boom")
    assert failed.status_code == 500
    assert_security_headers(failed)
    with TestClient(client.app, base_url="https://api.example.com") as over_tls:
        assert_security_headers(over_tls.get("/healthz"), tls=True)
        assert_security_headers(over_tls.get("/api/v1/users/me"), tls=True)


def test_uvicorn_sends_no_server_banner(client: Any) -> None:
    """What ``vto serve`` and ``vto api`` run: uvicorn with the options of ``command_api.serve``,
    serving over a real socket."""
    from command_api import serve

    assert serve.SERVER_OPTIONS["server_header"] is False
    config = uvicorn.Config(client.app, host="127.0.0.1", port=0, lifespan="off", **serve.SERVER_OPTIONS)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (server.started and server.servers):
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        response = httpx.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        server.should_exit = True
        thread.join(30)
    assert response.status_code == 200
    assert "server" not in response.headers, dict(response.headers)
    assert_security_headers(response)


def test_cors_is_off_by_default_and_allows_only_the_origins_configured(services: Any) -> None:
    from command_api.app import create_app

    preflight = {
        "Origin": "https://shop.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    with TestClient(create_app(services)) as off:
        refused = off.options("/api/v1/collections", headers=preflight)
        assert "access-control-allow-origin" not in refused.headers
        simple = off.get("/healthz", headers={"Origin": "https://shop.example.com"})
        assert "access-control-allow-origin" not in simple.headers

    settings = services.settings.model_copy(update={"cors_origins": ["https://shop.example.com"]})
    with TestClient(create_app(services, settings=settings)) as on:
        allowed = on.options("/api/v1/collections", headers=preflight)
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example.com"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "POST" in allowed.headers["access-control-allow-methods"]
        assert_security_headers(allowed)
        other = on.options("/api/v1/collections", headers={**preflight, "Origin": "https://evil.example"})
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
        simple = on.get("/healthz", headers={"Origin": "https://shop.example.com"})
        assert simple.headers["access-control-allow-origin"] == "https://shop.example.com"
        assert "X-Request-ID" in simple.headers["access-control-expose-headers"]


def test_cors_origins_setting_takes_a_list_or_commas_and_refuses_paths(monkeypatch: Any) -> None:
    monkeypatch.setenv("VTO_CORS_ORIGINS", "https://a.example.com, http://localhost:3000")
    assert Settings(_env_file=None).cors_origins == ["https://a.example.com", "http://localhost:3000"]  # type: ignore[call-arg]
    monkeypatch.setenv("VTO_CORS_ORIGINS", '["https://b.example.com"]')
    assert Settings(_env_file=None).cors_origins == ["https://b.example.com"]  # type: ignore[call-arg]
    monkeypatch.delenv("VTO_CORS_ORIGINS")
    assert Settings(_env_file=None).cors_origins == []  # type: ignore[call-arg]
    for bad in ("https://a.example.com/app", "a.example.com", "ftp://a.example.com", "https://"):
        monkeypatch.setenv("VTO_CORS_ORIGINS", bad)
        with pytest.raises(ValueError, match="CORS"):
            Settings(_env_file=None)  # type: ignore[call-arg]


def test_metrics_and_readiness_detail_are_for_operators_only(client: Any, services: Any) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {OPS_TOKEN}"}):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.json()["code"] == "unauthorized"
        assert "vto_" not in refused.text
    assert client.get("/metrics", headers=OPERATOR).status_code == 200

    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    services.projector.stop()
    anyone = client.get("/readyz")
    assert anyone.status_code == 503
    assert anyone.json()["code"] == "not_ready" and "checks" not in anyone.json()
    assert "projections" not in anyone.text and "stopped" not in anyone.text
    operator = client.get("/readyz", headers=OPERATOR)
    assert operator.status_code == 503 and "stopped" in operator.json()["checks"]["projections"]


def test_without_an_operator_token_metrics_are_off(services: Any) -> None:
    from command_api.app import create_app

    settings = services.settings.model_copy(update={"ops_token": None})
    off = type(services)(**{**services.__dict__, "settings": settings})
    with TestClient(create_app(off)) as plain:
        for headers in ({}, OPERATOR):
            response = plain.get("/metrics", headers=headers)
            assert response.status_code == 404 and "VTO_OPS_TOKEN" in response.json()["detail"]
        assert plain.get("/readyz").json() == {"status": "ready"}


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
    count, total, zero = _waits(client.get("/metrics", headers=OPERATOR).text)
    assert client.get("/api/v1/points", headers=caller.headers).status_code == 200
    after = _waits(client.get("/metrics", headers=OPERATOR).text)
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
    count, total, zero = _waits(client.get("/metrics", headers=OPERATOR).text)
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
        "VTO_OPS_TOKEN": OPS_TOKEN,
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
            return _waits(httpx.get(f"{base}/metrics", headers=OPERATOR, timeout=60).text)[0]

        before = waits()
        reads = 40
        for _ in range(reads):
            assert httpx.get(f"{base}/api/v1/points", headers=caller.headers, timeout=60).status_code == 200
        workers = {path.stem.split("_")[-1] for path in shared.glob("histogram_*.db")}
        assert len(workers) == 2, f"the reads were not served by both workers: {sorted(workers)}"
        assert [waits() for _ in range(8)] == [before + reads] * 8
        statuses = deployment.stop_all()
        assert statuses == dict.fromkeys(deployment.processes, 0), f"logs in {deployment.logs}"
        # Each worker's access log reaches the process's output: every read is there.
        logged = (deployment.logs / "api-0-1.log").read_text().count('"path": "/api/v1/points"')
        assert logged >= reads + 1, f"{logged} access log lines of GET /points; logs in {deployment.logs}"
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
