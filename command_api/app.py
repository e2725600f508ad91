"""The FastAPI application: routers under ``/api/v1``, one problem handler, operations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from command_api import problems
from command_api.body_limit import BodyLimit
from command_api.ops import endpoints as ops
from command_api.ops.middleware import Observe
from command_api.serve import tune_gc
from command_api.services import Services, build_services
from infra.settings import Settings, get_settings

API_PREFIX = "/api/v1"


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
    settings at start-up and closes them at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        app.state.services = services or (build or (lambda: build_services(settings or get_settings())))()
        try:
            yield
        finally:
            if owned:
                app.state.services.close()

    app = FastAPI(
        title="VTO API",
        version="1.0.0",
        summary="Virtual try-on for fashion commerce: catalog, generation jobs, points.",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    problems.install(app)
    app.add_middleware(BodyLimit)  # inside ``Observe``: refused bodies are logged and measured too
    app.add_middleware(Observe)
    trusted = (services.settings if services is not None else settings or get_settings()).trusted_proxies
    if trusted:  # outermost: everything inside sees the client behind the proxies
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(trusted))
    app.include_router(ops.router)
    app.include_router(api_router())
    return app
