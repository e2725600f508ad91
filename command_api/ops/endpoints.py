"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from command_api.deps import ServicesDep
from command_api.ops import metrics
from command_api.problems import problem
from projections.lag import lag

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database, projections and queue reachable")
def readyz(services: ServicesDep) -> Response:
    checks: dict[str, object] = {}
    try:
        with services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported in the response, not hidden
        checks["database"] = f"error: {exc.__class__.__name__}"
    if services.projector is not None:
        stopped = [r.name for r in services.projector.runners if not r.running]
        checks["projections"] = "ok" if not stopped else f"stopped: {', '.join(stopped)}"
    if all(v == "ok" for v in checks.values()):
        return Response(content='{"status": "ready"}', media_type="application/json")
    return problem(503, "not_ready", "a dependency is not ready", checks=checks)


@router.get("/metrics", summary="Prometheus metrics")
def prometheus(services: ServicesDep) -> Response:
    metrics.LEDGER_CONFLICTS.set(services.ledger.stats.conflicts)
    metrics.LEDGER_GAVE_UP.set(services.ledger.stats.exhausted)
    with psycopg.connect(services.url, autocommit=True) as conn:
        for item in lag(conn):
            metrics.PROJECTION_LAG_EVENTS.labels(item.name).set(item.events)
            metrics.PROJECTION_LAG_SECONDS.labels(item.name).set(item.seconds)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
