"""Errors as ``application/problem+json`` (RFC 9457), from one set of exception handlers.

Every error response has ``type``, ``title``, ``status``, ``detail`` and a machine-readable
``code``; ``type`` is the URL of the page that describes the code (``/problems/{code}``,
served by ``command_api.reference``). Domain errors of the ledger map to their status by
``code``. The OpenAPI document lists each operation's problems (``command_api.reference.openapi``)."""

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

# The database refused or dropped a connection, or a pool of the connection budget (docs/operations.md
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
LEDGER_DEFAULT_STATUS = 409


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


PROBLEM_PAGES = "/problems"


def public_base(request: Request) -> str:
    """The base of the links the API returns: ``VTO_PUBLIC_BASE_URL`` when set, otherwise
    the request's own base URL (scheme, host and root path the client used)."""
    services = getattr(request.app.state, "services", None)
    configured = services.settings.public_base_url if services is not None else ""
    return (configured or str(request.base_url)).rstrip("/")


def problem_type(code: str, request: Request | None = None) -> str:
    """The URL of the page describing ``code`` (relative without a request)."""
    base = public_base(request) if request is not None else ""
    return f"{base}{PROBLEM_PAGES}/{code}"


def problem(
    status: int, code: str, detail: str, *, request: Request | None = None, **extra: Any
) -> JSONResponse:
    body = {
        "type": problem_type(code, request),
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


HTTP_CODES = {
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


async def _problem_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    response = problem(exc.status, exc.code, exc.detail, request=request, **exc.extra)
    response.headers.update(exc.headers)
    return response


# What to do, appended to the ledger's own message (the ledger knows nothing of HTTP).
LEDGER_ADVICE = {
    "insufficient_entitlement": "an admin grants credits, tickets or a subscription "
    "(POST /api/v1/admin/grants); GET /api/v1/points shows what the account holds",
}


async def _ledger_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LedgerError)
    advice = LEDGER_ADVICE.get(exc.code)
    detail = f"{exc}; {advice}" if advice else str(exc)
    return problem(LEDGER_STATUS.get(exc.code, LEDGER_DEFAULT_STATUS), exc.code, detail, request=request)


# Request fields whose validation errors have a code of their own (instead of
# ``validation_error``), when every error of the request is about that one field.
FIELD_PROBLEMS: dict[tuple[str, ...], str] = {
    ("body", "deadline_s"): "invalid_deadline",
    ("header", "Cancel-After"): "invalid_cancel_after",
}


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    codes = {FIELD_PROBLEMS.get(tuple(str(part) for part in e["loc"][:2])) for e in errors}
    code = (codes.pop() if len(codes) == 1 else None) or "validation_error"
    return problem(422, code, "the request is not valid", request=request, errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, "error")
    return problem(exc.status_code, code, str(exc.detail), request=request)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database refused or dropped the connection, or the pool had none free in time: the
    request changed nothing (its transaction did not commit) and may be retried."""
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    response = problem(
        503, DATABASE_UNAVAILABLE_CODE, "the database is busy or unreachable; retry shortly", request=request
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal_error", "an unexpected error occurred; it has been logged", request=request)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(LedgerError, _ledger_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
