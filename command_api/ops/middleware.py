"""Request ids, structured access logs and latency metrics; security headers."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from command_api.ops.metrics import REQUEST_LATENCY
from infra.tracing import TraceContext

log = logging.getLogger("vto.access")


UNMATCHED = "unmatched"
OTHER_METHOD = "OTHER"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_ID_PARAMETER = re.compile(r"\{\w*_id\}")
# A client's X-Request-ID is kept only when it is a short token of these characters (it goes
# into every log line and back into a header); anything else is replaced by a generated id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id(given: str | None) -> str:
    return given if given is not None and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def method_label(method: str) -> str:
    """The method, or ``OTHER`` for the tokens a client may invent (labels stay bounded)."""
    return method if method in METHODS else OTHER_METHOD


def route_label(scope: Mapping[str, Any]) -> str:
    """The template of the route that matched (known after routing), or ``unmatched``, so the
    metric's labels are as few as the routes. Id parameters read ``{id}``
    (``/api/v1/projects/{id}/products``), the labels the dashboards have always had."""
    route = scope.get("route")
    if not isinstance(route, Route):
        return UNMATCHED
    # FastAPI keeps an included route's own path relative to its router; the template with
    # every prefix is on the route context it selected.
    selected = scope.get("fastapi", {}).get("effective_route_context")
    return template_label(getattr(selected, "path_format", None) or route.path_format)


def template_label(path_format: str) -> str:
    """A route's path as the metrics name it: each id parameter reads ``{id}``."""
    return _ID_PARAMETER.sub("{id}", path_format)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class Observe:
    """Pure ASGI middleware (no per-request task or stream, as ``BaseHTTPMiddleware`` has):
    gives each request its id (``request.state.request_id``, the ``X-Request-ID`` header) and
    its trace context (``request.state.trace``: a span in the client's W3C ``traceparent``
    trace, or a new trace; ``infra.tracing``), measures it by method, route template and
    status, and writes one JSON access log line (with ``trace_id``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(_header(scope, b"x-request-id"))
        context = TraceContext.continued(_header(scope, b"traceparent"), _header(scope, b"tracestate"), rid)
        state = scope.setdefault("state", {})
        state["request_id"], state["trace"] = rid, context
        start = time.perf_counter()
        status = 500  # what the client gets when the app raises before it answers

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            template = route_label(scope)
            method = scope["method"]
            REQUEST_LATENCY.labels(method_label(method), template, str(status)).observe(elapsed)
            log.info(
                json.dumps(
                    {
                        "request_id": rid,
                        "trace_id": context.trace_id_hex,
                        "method": method,
                        "path": scope["path"],
                        "route": template,
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                    }
                )
            )


# What every response says to a browser: never sniff a content type, never render inside a
# frame (both headers, for old and new browsers), send no Referer to links followed from it.
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
)
# Over TLS only (RFC 6797: a host sends it over a secure transport): two years, the preload
# list's figure; no includeSubDomains, which would bind every other host of the domain.
HSTS = ("Strict-Transport-Security", "max-age=63072000")


class SecurityHeaders:
    """Pure ASGI middleware around the whole app (``command_api.app.Api`` puts it outside
    Starlette's error middleware, so a 500 carries them too): the ``SECURITY_HEADERS`` on every
    response, and ``HSTS`` when the request came over TLS (``scope["scheme"]`` is ``https``: a
    TLS listener, or a trusted proxy's ``X-Forwarded-Proto``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = SECURITY_HEADERS + ((HSTS,) if scope.get("scheme") == "https" else ())

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra:
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
