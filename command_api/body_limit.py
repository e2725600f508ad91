"""A size limit on every request body, applied before anything reads or parses it.

``BodyLimit`` is an ASGI middleware around the whole app. The limit of a request is chosen
before it is routed: the routes whose body is a form (the multipart uploads, found in the
OpenAPI schema) accept ``max_upload_bytes`` plus ``MULTIPART_OVERHEAD``; every other route,
and every path that matches none, ``max_json_bytes``. A declared ``Content-Length`` over the
limit is answered 413 at once (nothing is read); a body without one (chunked) is counted as it
is received and refused the moment it passes the limit, so at most ``limit`` bytes plus one
chunk are ever held. The limits are read from the app's settings on each request."""

from __future__ import annotations

import re
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from command_api.problems import problem

MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the small text fields
DETAIL = "the request body is too large"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body passes its limit: FastAPI passes HTTP exceptions
    through its body reading, and ``problems.py`` answers them (413 ``payload_too_large``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"{DETAIL} (limit {limit} bytes)")


def _upload_routes(app: Any) -> list[tuple[str, re.Pattern[str]]]:
    """(method, path pattern) of every operation whose request body is multipart."""
    routes = []
    for path, operations in app.openapi().get("paths", {}).items():
        for method, operation in operations.items():
            content = (
                operation.get("requestBody", {}).get("content", {}) if isinstance(operation, dict) else {}
            )
            if "multipart/form-data" in content:
                routes.append((method.upper(), compile_path(path)[0]))
    return routes


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._uploads: list[tuple[str, re.Pattern[str]]] | None = None

    def limit(self, scope: Scope) -> int:
        app = scope["app"]
        settings = app.state.services.settings
        if self._uploads is None:
            self._uploads = _upload_routes(app)
        method, path = scope["method"], scope["path"]
        if any(method == m and pattern.match(path) for m, pattern in self._uploads):
            return int(settings.max_upload_bytes) + MULTIPART_OVERHEAD
        return int(settings.max_json_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and not (
            declared.isascii() and declared.isdigit() and int(declared) <= limit
        ):
            too_large = problem(
                413, "payload_too_large", f"{DETAIL} (limit {limit} bytes)", request=Request(scope)
            )
            await too_large(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except BodyTooLarge as exc:  # read outside FastAPI's handlers: answered here
            if started:
                raise
            await problem(413, "payload_too_large", str(exc.detail), request=Request(scope))(
                scope, receive, send
            )
