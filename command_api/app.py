"""The FastAPI application: routers under ``/api/v1``, one problem handler, operations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from command_api import problems
from command_api.body_limit import BodyLimit
from command_api.ops import endpoints as ops
from command_api.ops.middleware import Observe, SecurityHeaders
from command_api.reference import endpoints as reference
from command_api.reference import openapi
from command_api.serve import tune_gc
from command_api.services import Services, build_services
from infra.console import configure_logging
from infra.settings import Settings, get_settings

API_PREFIX = "/api/v1"
DESCRIPTION = """Order virtual try-on images and videos of a project's garments on a person photo,
paid from an event-sourced point ledger.

1. `POST /api/v1/auth/register`, then `POST /api/v1/auth/login`: send its `access_token` as
   `Authorization: Bearer <token>` (the **Authorize** button).
2. An admin grants points (`POST /api/v1/admin/grants`); the server's operator makes an account
   an admin with `uv run vto admin add EMAIL`.
3. Upload garments to a project and a person photo as an asset, then `POST /api/v1/vto/jobs`
   and follow `GET /api/v1/vto/jobs/{job_id}` until `succeeded`: each output has a signed `url`.

Errors are `application/problem+json`: `code` says what happened, `type` links to a page that
says what to do ([every code](/problems))."""

# CORS, when VTO_CORS_ORIGINS names origins: what their pages may send and read. No
# credentials: the API authenticates with the Authorization header, never with cookies.
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CORS_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID", "Cancel-After")
CORS_EXPOSED = ("X-Request-ID", "Retry-After", "Location")
CORS_MAX_AGE_S = 600


def with_outer_layers(app: FastAPI, trusted_proxies: list[str]) -> FastAPI:
    """``app`` with ``SecurityHeaders`` around everything, and, when proxies are trusted,
    ``ProxyHeadersMiddleware`` around that (so that everything inside, the HSTS decision
    included, sees the client and scheme behind them). Starlette builds the middleware stack
    itself, with its error middleware outermost (the one that answers a 500), in
    ``build_middleware_stack``, which this wraps (on the instance: fastapi-offline builds the
    app, so it cannot be a subclass)."""
    build = app.build_middleware_stack

    def wrapped() -> ASGIApp:
        stack: ASGIApp = SecurityHeaders(build())
        if trusted_proxies:  # uvicorn's ASGI types are its own; the app is a Starlette ASGIApp
            return cast(ASGIApp, ProxyHeadersMiddleware(cast(Any, stack), trusted_hosts=trusted_proxies))
        return stack

    app.build_middleware_stack = wrapped  # type: ignore[method-assign]
    return app


def api_router() -> APIRouter:
    """Every area's router. Imported here so each area module stays self-contained."""
    from command_api import routers

    router = APIRouter(prefix=API_PREFIX)
    for area in routers.ALL:
        router.include_router(area)
    return router


def api_app() -> FastAPI:
    """The app of one ``vto api`` worker process (uvicorn ``factory=True``): its own
    services, no projections (the projector process runs them), migrations already applied.
    Its logging as ``vto api``'s own: a worker is a new interpreter, and without it the
    INFO lines (the access log) went nowhere."""
    configure_logging(verbose=True)
    tune_gc()
    return create_app(build=lambda: build_services(get_settings(), migrate=False, run_projections=False))


def create_app(
    services: Services | None = None,
    settings: Settings | None = None,
    build: Callable[[], Services] | None = None,
) -> FastAPI:
    """The app. Given ``services`` it uses them (tests); otherwise it builds them from the
    settings at start-up and closes them at shutdown. CORS follows ``settings`` (else the
    services', else the environment's)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        app.state.services = services or (build or (lambda: build_services(settings or get_settings())))()
        try:
            yield
        finally:
            hub = getattr(app.state, "job_event_hub", None)
            if hub is not None:  # the live events' connection
                app.state.job_event_hub = None
                await hub.close()
            limits = getattr(app.state, "upload_limits", None)
            if limits is not None:  # its image threads; a later start makes new ones
                app.state.upload_limits = None
                limits.close()
            if owned:
                app.state.services.close()

    # Swagger UI (/docs) and ReDoc (/redoc) from the files fastapi-offline ships: no CDN.
    app = FastAPIOffline(
        title="VTO API",
        version="1.0.0",
        summary="Virtual try-on for fashion commerce: catalog, generation jobs, points.",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url="/redoc",
        openapi_url="/openapi.json",
        static_url="/docs-static",
    )
    problems.install(app)
    openapi.install(app)
    app.add_middleware(BodyLimit)  # inside ``Observe``: refused bodies are logged and measured too
    origins = (settings or (services.settings if services is not None else get_settings())).cors_origins
    if origins:  # outside ``BodyLimit``: a refused body still tells the page why
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            expose_headers=CORS_EXPOSED,
            max_age=CORS_MAX_AGE_S,
        )
    app.add_middleware(Observe)
    app.include_router(ops.router)
    app.include_router(reference.router)
    app.include_router(api_router())
    trusted = (services.settings if services is not None else settings or get_settings()).trusted_proxies
    return with_outer_layers(app, list(trusted))
