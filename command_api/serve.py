"""Serving the API over HTTP with uvicorn (httptools, uvloop). What runs beside it is wired
by the composition root (``infra.cli``)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

# uvicorn's default (5 s) closes kept-alive connections that clients and load balancers still
# hold; 30 s stays under the usual 60 s idle timeout of load balancers.
KEEP_ALIVE_S = 30


def run_http(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` in this process until interrupted."""
    uvicorn.run(
        app, host=host, port=port, log_level="info", access_log=False, timeout_keep_alive=KEEP_ALIVE_S
    )


def run_http_workers(host: str, port: int, workers: int) -> None:
    """Serve the API from ``workers`` uvicorn processes, each building its own services from
    the settings (``command_api.app:api_app``)."""
    uvicorn.run(
        "command_api.app:api_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
    )
