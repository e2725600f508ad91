"""Running the API with uvicorn: ``vto serve`` (everything in one process, embedded defaults)
and ``vto api`` (the API alone, for a distributed deployment)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import uvicorn

from command_api.app import create_app
from command_api.services import Services, build_services
from infra.settings import Settings

log = logging.getLogger(__name__)

# Components that `vto serve` runs beside the API: each is called with the services and
# returns a function that stops it.
Component = Callable[[Services], Callable[[], None]]


def serve_components() -> list[Component]:
    from generator_worker.pipeline.embedded import start_pipeline

    return [start_pipeline]


def serve(
    settings: Settings, host: str, port: int, *, all_in_one: bool, announce: Callable[[str], None]
) -> None:
    """Start the services (embedded PostgreSQL when no database is configured, migrations,
    projections when ``all_in_one``), then serve HTTP until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    services = build_services(settings, run_projections=all_in_one)
    stops = [component(services) for component in serve_components()] if all_in_one else []
    try:
        app = create_app(services)
        mode = "embedded defaults" if settings.embedded else "configured database"
        announce(f"VTO API on http://{host}:{port} ({mode}); docs: http://{host}:{port}/docs")
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
    finally:
        for stop in reversed(stops):
            stop()
        services.close()
