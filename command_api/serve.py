"""Serving the API over HTTP with uvicorn (httptools, uvloop). What runs beside it is wired
by the composition root (``infra.cli``).

On SIGTERM or SIGINT uvicorn stops accepting connections, closes idle kept-alive ones, lets the
requests in progress finish (at most ``GRACEFUL_SHUTDOWN_S``), then raises the signal again,
which ``infra.cli.stop_on_signals`` turns into a clean exit (status 0) that stops the rest of
the process (``vto serve``: the pipeline, the projections, the embedded PostgreSQL)."""

from __future__ import annotations

import contextlib
import errno
import gc
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from command_api.ops.metrics import shared_across_processes

# uvicorn's default (5 s) closes kept-alive connections that clients and load balancers still
# hold; 30 s stays under the usual 60 s idle timeout of load balancers.
KEEP_ALIVE_S = 30
# A request waits at most the read-your-writes deadline (5 s) after its command; 20 s bounds a
# graceful stop well inside the usual 30 s an orchestrator gives before SIGKILL.
GRACEFUL_SHUTDOWN_S = 20


# The cyclic garbage collector of a serving process: a young-generation collection every
# 100,000 allocations instead of 700, and a full one far less often. A serving process keeps
# a large, long-lived heap (the cached accounts with their open reservations, the routes),
# which every full collection walks: with the interpreter's defaults those pauses set the p99
# latency (measured at 16 connections: p99 132-150 ms with the defaults, 58-62 ms with these,
# the same requests/s). Memory is still reclaimed by reference counting as before.
GC_THRESHOLDS = (100_000, 50, 1_000)

# The options of every uvicorn this project starts (``run_http``, ``run_http_workers``). No
# ``server`` header: the banner names the software (and, in other servers, its version) to
# anyone scanning for it, and tells the API's own clients nothing.
#
# uvicorn's own proxy-header handling is off: by default it believes ``X-Forwarded-For`` from
# 127.0.0.1 (its ``FORWARDED_ALLOW_IPS``), which lets any client on the host choose its
# address; the app believes only ``VTO_TRUSTED_PROXIES`` (``command_api.app``).
SERVER_OPTIONS: dict[str, Any] = {
    "access_log": False,
    "proxy_headers": False,
    "timeout_keep_alive": KEEP_ALIVE_S,
    "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
    "server_header": False,
}


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


class PortUnavailable(Exception):
    """The address cannot be listened on (in use, not this machine's, or not allowed)."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        reason = error.strerror or str(error)
        if error.errno == errno.EADDRINUSE:
            reason = "the port is in use (another `vto serve`?); choose another with --port"
        super().__init__(f"cannot listen on {host}:{port}: {reason}")


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: any free port), not yet listening: the
    address is taken before anything else starts, and connections are refused until the app
    is ready (``run_http`` listens on it). Raises ``PortUnavailable``."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise PortUnavailable(host, port, exc) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only, as uvicorn
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise PortUnavailable(host, port, exc) from None
    sock.set_inheritable(True)
    return sock


# A second SIGINT within this many seconds of the first is the same Ctrl+C delivered twice (by
# the terminal to the process group, and again by ``uv run`` to its child), not a second press.
REPEATED_SIGNAL_S = 1.0


class _Server(uvicorn.Server):
    """uvicorn's server, calling ``on_ready`` once it listens and ``on_signal`` at the first
    SIGINT or SIGTERM. A stop by signal returns from ``run`` like any other stop (uvicorn
    itself raises the signal again once it has stopped, inside its event loop: a second
    Ctrl+C, which skips the graceful wait, then ends in a traceback); the caller stops the
    rest of the process."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_ready: Callable[[], None] | None,
        on_signal: Callable[[int], None] | None,
    ) -> None:
        super().__init__(config)
        self.on_ready = on_ready
        self.on_signal = on_signal
        self.first_signal_at: float | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit and self.on_ready is not None:
            self.on_ready()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.first_signal_at is None:
            self.first_signal_at = now
            if self.on_signal is not None:
                self.on_signal(sig)
        elif now - self.first_signal_at < REPEATED_SIGNAL_S:
            return
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_http(
    app: FastAPI,
    host: str,
    port: int,
    *,
    sock: socket.socket | None = None,
    quiet: bool = False,
    on_ready: Callable[[], None] | None = None,
    on_signal: Callable[[int], None] | None = None,
) -> None:
    """Serve ``app`` in this process until interrupted, on ``sock`` (from ``bind_socket``)
    or on ``host:port``. ``quiet``: uvicorn logs warnings and errors only."""
    tune_gc()
    config = http_config(app, host, port, quiet=quiet)
    _Server(config, on_ready, on_signal).run(sockets=None if sock is None else [sock])


def http_config(app: FastAPI, host: str, port: int, *, quiet: bool = False) -> uvicorn.Config:
    """How ``app`` is served in this process (``SERVER_OPTIONS``); ``quiet``: uvicorn logs
    warnings and errors only."""
    log_level = "warning" if quiet else "info"
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, **SERVER_OPTIONS)


def run_http_workers(host: str, port: int, workers: int) -> None:
    """Serve the API from ``workers`` uvicorn processes, each building its own services from
    the settings (``command_api.app:api_app``); ``/metrics`` shows them all together
    (``command_api.ops.metrics``)."""
    with shared_across_processes():
        uvicorn.run(
            "command_api.app:api_app", factory=True, host=host, port=port, workers=workers, **SERVER_OPTIONS
        )
