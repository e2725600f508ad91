"""The FastAPI application: routers under ``/api/v1``, one problem handler, operations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from command_api import problems
from command_api.body_limit import BodyLimit
from command_api.ops import endpoints as ops
from command_api.ops.middleware import Observe, SecurityHeaders
from command_api.serve import tune_gc
from command_api.services import Services, build_services
from infra.settings import Settings, get_settings

API_PREFIX = "/api/v1"

# CORS, when VTO_CORS_ORIGINS names origins: what their pages may send and read. No
# credentials: the API authenticates with the Authorization header, never with cookies.
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CORS_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID", "Cancel-After")
CORS_EXPOSED = ("X-Request-ID", "Retry-After", "Location")
CORS_MAX_AGE_S = 600


class Api(FastAPI):
    """The app, with ``SecurityHeaders`` around everything: Starlette builds the middleware
    stack itself with its error middleware outermost (the one that answers a 500), and
    ``build_middleware_stack`` is where it does."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


def api_router() -> APIRouter:
    """Every area's router. Imported here so each area module stays self-contained."""
    from command_api import routers

    router = APIRouter(prefix=API_PREFIX)
    for area in routers.ALL:
        router.include_router(area)
    return router


def api_app() -> FastAPI:
    """The app of one ``vto api`` worker process (uvicorn ``factory=True``): its own
    services, no projections (the projector process runs them), migrations already applied."""
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
            limits = getattr(app.state, "upload_limits", None)
            if limits is not None:  # its image threads; a later start makes new ones
                app.state.upload_limits = None
                limits.close()
            if owned:
                app.state.services.close()

    app = Api(
        title="VTO API",
        version="1.0.0",
        summary="Virtual try-on for fashion commerce: catalog, generation jobs, points.",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    problems.install(app)
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
    app.include_router(api_router())
    return app
