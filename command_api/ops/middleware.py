"""Request ids, structured access logs and latency metrics."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import Request, Response

from command_api.ops.metrics import REQUEST_LATENCY

log = logging.getLogger("vto.access")


_ID = re.compile(r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|\d+)$")


def route_label(request: Request) -> str:
    """The path with its ids replaced by ``{id}`` (``/api/v1/projects/{id}/products``), or
    ``unmatched`` when no route matched, so the metric's labels stay few."""
    if request.scope.get("route") is None:
        return "unmatched"
    path = request.url.path
    if path.startswith("/api/v1/files/"):
        return "/api/v1/files/{key}"
    return "/".join("{id}" if _ID.match(part) else part for part in path.split("/"))


async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    request.state.request_id = request_id
    start = time.perf_counter()
    response = await call_next(request)
    elapsed = time.perf_counter() - start
    template = route_label(request)
    REQUEST_LATENCY.labels(request.method, template, str(response.status_code)).observe(elapsed)
    response.headers["X-Request-ID"] = request_id
    log.info(
        json.dumps(
            {
                "request_id": request_id,
                "method": request.method,
                "path": request.url.path,
                "route": template,
                "status": response.status_code,
                "ms": round(elapsed * 1000, 2),
            }
        )
    )
    return response
