"""Operations: liveness, readiness, Prometheus metrics.

``/healthz`` and the plain answer of ``/readyz`` (200 or 503) are for anyone (load balancers,
orchestrators). What is not ready, and ``/metrics``, are for the operators: the bearer token
``VTO_OPS_TOKEN`` (without it ``/metrics`` is off). ``/docs`` and ``/openapi.json`` stay public:
they describe the API every client may call, and nothing of its state."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from command_api.auth.errors import Unauthorized
from command_api.deps import ServicesDep
from command_api.ops import metrics
from command_api.problems import DomainError, problem
from command_api.services import Services
from pipeline.webhooks import metrics as webhook_metrics
from projections import tracking
from projections.lag import lag

router = APIRouter(tags=["operations"])

operator_bearer = HTTPBearer(
    auto_error=False, scheme_name="OperatorToken", description="The operators' token (VTO_OPS_TOKEN)"
)
OperatorCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(operator_bearer)]


class MetricsOff(DomainError):
    status, code = 404, "not_found"

    def __init__(self) -> None:
        super().__init__("metrics are off: set VTO_OPS_TOKEN and scrape with it as a bearer token")


def is_operator(services: Services, credentials: HTTPAuthorizationCredentials | None) -> bool:
    """Whether the request carries the operators' token (compared in constant time)."""
    token = services.settings.ops_token
    if token is None or credentials is None or credentials.scheme.lower() != "bearer":
        return False
    given = credentials.credentials.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, token.get_secret_value().encode())


@contextmanager
def _pooled(services: Services) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the API's catalog pool, as psycopg's: within the connection budget,
    where a connection per call would not be (docs/operations.md "Connection budget")."""
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
            "description": "not_ready; with the operators' token, ``checks`` names what is not",
            "content": {"application/problem+json": {}},
        },
    },
)
def readyz(request: Request, services: ServicesDep, credentials: OperatorCredentials) -> Response:
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
        problems += [f"{name}: stopped" for name in services.projector.stopped()]
    checks["projections"] = "ok" if not problems else "; ".join(problems)
    if all(v == "ok" for v in checks.values()):
        return Response(content='{"status": "ready"}', media_type="application/json")
    if not is_operator(services, credentials):
        return problem(503, "not_ready", "a dependency is not ready", request=request)
    return problem(503, "not_ready", "a dependency is not ready", request=request, checks=checks)


@router.get(
    "/metrics",
    summary="Prometheus metrics (the operators' token; off without VTO_OPS_TOKEN)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
        401: {"description": "unauthorized: the operators' token is required"},
        404: {"description": "not_found: metrics are off (VTO_OPS_TOKEN is not set)"},
    },
)
def prometheus(services: ServicesDep, credentials: OperatorCredentials) -> Response:
    if services.settings.ops_token is None:
        raise MetricsOff()
    if not is_operator(services, credentials):
        raise Unauthorized("the operators' token (VTO_OPS_TOKEN) is required")
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
    # This process's (in multiprocess mode: every API worker's) and the webhooks' backlog.
    body = metrics.exposition() + generate_latest(webhook_metrics.REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
