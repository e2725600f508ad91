"""Request-size limits applied before a body is parsed.

``LimitedRoute`` (the route class of every catalog router) answers 413 before FastAPI reads
the body: multipart uploads may be ``max_upload_bytes`` plus some multipart overhead, JSON
bodies ``MAX_JSON_BYTES``. A declared Content-Length over the limit is refused at once; a
chunked body is read up to the limit and replayed to the parser."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import params
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from command_api.deps import get_services
from command_api.problems import PayloadTooLarge

MAX_JSON_BYTES = 64 * 1024
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the small text fields


def too_large() -> PayloadTooLarge:
    return PayloadTooLarge("the request body is too large")


def body_limit(request: Request, is_form: bool) -> int:
    if not is_form:
        return MAX_JSON_BYTES
    # Runs before the body is parsed, so before FastAPI solves the endpoint's dependencies:
    # it calls the provider behind ``ServicesDep`` itself.
    return int(get_services(request).settings.max_upload_bytes) + MULTIPART_OVERHEAD


async def limited(request: Request, limit: int) -> Request:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or int(declared) > limit:
            raise too_large()
        return request  # the server holds the body to the declared length
    if request.method in ("GET", "HEAD", "DELETE", "OPTIONS"):
        return request
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise too_large()
        chunks.append(chunk)
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, replay)


class LimitedRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        is_form = self.body_field is not None and isinstance(self.body_field.field_info, params.Form)

        async def limited_handler(request: Request) -> Response:
            return await handler(await limited(request, body_limit(request, is_form)))

        return limited_handler
