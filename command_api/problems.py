"""Errors as ``application/problem+json`` (RFC 9457), from one set of exception handlers.

Every error response has ``type``, ``title``, ``status``, ``detail`` and a machine-readable
``code``. Domain errors of the ledger map to their status by ``code``."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import eventsourcing.persistence
import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from infra.ledger_store import LedgerPoolTimeout
from ledger.errors import LedgerError

log = logging.getLogger(__name__)

# The database refused or dropped a connection, or a pool of the connection budget (README
# "Connection budget") had none free within VTO_DB_POOL_TIMEOUT_S: 503 + Retry-After.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,  # connection refused, too many clients, dropped
    sqlalchemy.exc.TimeoutError,  # the catalog pool had no connection free in time
    psycopg.OperationalError,  # the same on a psycopg connection (psycopg_pool.PoolTimeout included)
    eventsourcing.persistence.OperationalError,  # the ledger's connection refused or dropped
    LedgerPoolTimeout,  # the ledger's pool had no connection free in time
)
DATABASE_UNAVAILABLE_CODE = "database_unavailable"
RETRY_AFTER_S = 1
# Operations that never touch the database (every other one may answer 503 database_unavailable).
NO_DATABASE = frozenset({"/healthz"})

PROBLEM_JSON = "application/problem+json"

LEDGER_STATUS: dict[str, int] = {
    "insufficient_entitlement": 402,
    "idempotency_key_reused": 409,
    "job_id_conflict": 409,
    "job_already_refunded": 409,
    "job_not_found": 404,
    "account_not_found": 404,
    "invalid_amount": 422,
    "balance_would_be_negative": 409,
    "unknown_job_kind": 422,
    "unknown_ticket_type": 422,
    "unknown_source": 422,
    "ledger_busy": 503,
}


class ProblemError(Exception):
    """An error the API answers with a problem response (``status``, ``code``, ``detail``)."""

    status: int
    code: str

    def __init__(
        self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra
        self.headers = headers or {}  # e.g. Retry-After


class DomainError(ProblemError):
    """A rule the request broke: one subclass per rule, whose class fixes ``status`` and
    ``code``; raised by services and repositories, answered by the one handler below."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(type(self).status, type(self).code, detail, **extra)


class NotFound(DomainError):
    """The object does not exist, or the caller may not know that it does."""

    status, code = 404, "not_found"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")


class Forbidden(DomainError):
    status, code = 403, "forbidden"


class PayloadTooLarge(DomainError):
    status, code = 413, "payload_too_large"


def problem(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
}


async def _problem_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    response = problem(exc.status, exc.code, exc.detail, **exc.extra)
    response.headers.update(exc.headers)
    return response


async def _ledger_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LedgerError)
    return problem(LEDGER_STATUS.get(exc.code, 409), exc.code, str(exc))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return problem(422, "validation_error", "the request is not valid", errors=errors)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    return problem(exc.status_code, code, str(exc.detail))


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database refused or dropped the connection, or the pool had none free in time: the
    request changed nothing (its transaction did not commit) and may be retried."""
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    response = problem(503, DATABASE_UNAVAILABLE_CODE, "the database is busy or unreachable; retry shortly")
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal_error", "an unexpected error occurred; it has been logged")


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
    "additionalProperties": True,
}


def document(openapi: dict[str, Any]) -> dict[str, Any]:
    """Every error answer of every operation documented as what it is: a ``Problem`` in
    ``application/problem+json`` (FastAPI documents its 422 and declared errors as JSON)."""
    openapi.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for route, path in openapi.get("paths", {}).items():
        for operation in path.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if route not in NO_DATABASE:
                _document_database_unavailable(operation["responses"])
            for status, response in operation["responses"].items():
                if status.isdigit() and int(status) >= 400:
                    response["content"] = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return openapi


def _document_database_unavailable(responses: dict[str, Any]) -> None:
    """The 503 every operation on the database may answer when its pool is exhausted or the
    database refuses (beside an operation's own 503, if it has one)."""
    what = f"{DATABASE_UNAVAILABLE_CODE}: the database is busy or unreachable; retry after Retry-After"
    response = responses.setdefault("503", {})
    own = response.get("description")
    response["description"] = f"{own}; or {what}" if own else what
    response.setdefault("headers", {})["Retry-After"] = {
        "description": "Seconds to wait before retrying (on database_unavailable)",
        "schema": {"type": "integer"},
    }


def install(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(original())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(LedgerError, _ledger_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
