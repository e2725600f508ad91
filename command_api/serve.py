"""Running the API with uvicorn: ``vto serve`` (everything in one process, embedded defaults)
and ``vto api`` (the API alone, for a distributed deployment)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import uvicorn

from command_api.app import create_app
from command_api.services import Services, build_services
from infra.database import database_url
from infra.migrate import upgrade
from infra.settings import Settings

log = logging.getLogger(__name__)

# uvicorn's default (5 s) closes kept-alive connections that clients and load balancers still
# hold; 30 s stays under the usual 60 s idle timeout of load balancers.
KEEP_ALIVE_S = 30

# Components that `vto serve` runs beside the API: each is called with the services and
# returns a function that stops it.
Component = Callable[[Services], Callable[[], None]]


def serve_components() -> list[Component]:
    from generator_worker.pipeline.embedded import start_pipeline

    return [start_pipeline]


def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    all_in_one: bool,
    announce: Callable[[str], None],
    workers: int = 1,
) -> None:
    """Start the services (embedded PostgreSQL when no database is configured, migrations,
    projections and the pipeline when ``all_in_one``), then serve HTTP until interrupted.
    ``workers`` > 1 (API only) runs that many uvicorn worker processes, each with its own
    services, after the migrations were applied once here."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if workers > 1:
        assert not all_in_one, "vto serve runs one process; use vto api --workers for more"
        upgrade(database_url(settings))
        announce(f"VTO API on http://{host}:{port} with {workers} workers; docs: http://{host}:{port}/docs")
        uvicorn.run(
            "command_api.app:api_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,
            timeout_keep_alive=KEEP_ALIVE_S,
        )
        return
    services = build_services(settings, run_projections=all_in_one)
    stops = [component(services) for component in serve_components()] if all_in_one else []
    try:
        app = create_app(services)
        mode = "embedded defaults" if settings.embedded else "configured database"
        announce(f"VTO API on http://{host}:{port} ({mode}); docs: http://{host}:{port}/docs")
        uvicorn.run(
            app, host=host, port=port, log_level="info", access_log=False, timeout_keep_alive=KEEP_ALIVE_S
        )
    finally:
        for stop in reversed(stops):
            stop()
        services.close()
