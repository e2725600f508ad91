"""Request ids, structured access logs and latency metrics."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import Request, Response

from command_api.ops.metrics import REQUEST_LATENCY

log = logging.getLogger("vto.access")


async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    request.state.request_id = request_id
    start = time.perf_counter()
    response = await call_next(request)
    elapsed = time.perf_counter() - start
    route = request.scope.get("route")
    template = getattr(route, "path", "unmatched")
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
