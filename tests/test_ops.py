"""Operations: liveness, readiness, metrics, request ids, and a busy database answered 503."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import create_engine

from command_api.deps import get_services
from infra.database import sqlalchemy_url
from infra.orm import make_sessionmaker
from tests.api_factories import make_user


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
