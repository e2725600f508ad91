"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from command_api.deps import ServicesDep
from command_api.ops import metrics
from command_api.problems import problem
from command_api.services import Services
from pipeline.webhooks import metrics as webhook_metrics
from projections import tracking
from projections.lag import lag

router = APIRouter(tags=["operations"])


@contextmanager
def _pooled(services: Services) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the API's catalog pool, as psycopg's: within the connection budget,
    where a connection per call would not be (README "Connection budget")."""
    with services.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        yield raw


@router.get("/healthz", summary="Liveness: the process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database reachable, projections running and not stuck on an event",
    responses={
        200: {"content": {"application/json": {"example": {"status": "ready"}}}},
        503: {
            "description": "not_ready, with ``checks`` naming what is not",
            "content": {"application/problem+json": {}},
        },
    },
)
def readyz(services: ServicesDep) -> Response:
    checks: dict[str, object] = {}
    problems: list[str] = []
    try:
        with _pooled(services) as conn:
            conn.execute("SELECT 1")
            # Stuck runners of any process (projections, the outbox relay) publish their event.
            problems += [
                f"{name}: cannot apply event {position} ({failures} tries): {error}"
                for name, failures, position, error in tracking.failing(conn)
            ]
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported in the response, not hidden
        checks["database"] = f"error: {exc.__class__.__name__}"
    if services.projector is not None:
        problems += [f"{r.name}: stopped" for r in services.projector.runners if not r.running]
    checks["projections"] = "ok" if not problems else "; ".join(problems)
    if all(v == "ok" for v in checks.values()):
        return Response(content='{"status": "ready"}', media_type="application/json")
    return problem(503, "not_ready", "a dependency is not ready", checks=checks)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
)
def prometheus(services: ServicesDep) -> Response:
    metrics.LEDGER_CONFLICTS.set(services.ledger.stats.conflicts)
    metrics.LEDGER_GAVE_UP.set(services.ledger.stats.exhausted)
    with _pooled(services) as conn:
        for item in lag(conn):
            metrics.PROJECTION_LAG_EVENTS.labels(item.name).set(item.events)
            metrics.PROJECTION_LAG_SECONDS.labels(item.name).set(item.seconds)
        stuck = {name: failures for name, failures, _, _ in tracking.failing(conn)}
        for name in tracking.positions(conn):
            metrics.PROJECTION_STUCK.labels(name).set(stuck.get(name, 0))
        webhook_metrics.refresh(conn)
    body = generate_latest(metrics.REGISTRY) + generate_latest(webhook_metrics.REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
