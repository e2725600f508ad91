"""Request ids, structured access logs and latency metrics."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from starlette.routing import Route

from command_api.ops.metrics import REQUEST_LATENCY

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


def route_label(request: Request) -> str:
    """The template of the route that matched (known after routing), or ``unmatched``, so the
    metric's labels are as few as the routes. Id parameters read ``{id}``
    (``/api/v1/projects/{id}/products``), the labels the dashboards have always had."""
    route = request.scope.get("route")
    if not isinstance(route, Route):
        return UNMATCHED
    # FastAPI keeps an included route's own path relative to its router; the template with
    # every prefix is on the route context it selected.
    selected = request.scope.get("fastapi", {}).get("effective_route_context")
    template = getattr(selected, "path_format", None) or route.path_format
    return _ID_PARAMETER.sub("{id}", template)


async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    request.state.request_id = rid = request_id(request.headers.get("x-request-id"))
    start = time.perf_counter()
    response = await call_next(request)
    elapsed = time.perf_counter() - start
    template = route_label(request)
    REQUEST_LATENCY.labels(method_label(request.method), template, str(response.status_code)).observe(elapsed)
    response.headers["X-Request-ID"] = rid
    log.info(
        json.dumps(
            {
                "request_id": rid,
                "method": request.method,
                "path": request.url.path,
                "route": template,
                "status": response.status_code,
                "ms": round(elapsed * 1000, 2),
            }
        )
    )
    return response
