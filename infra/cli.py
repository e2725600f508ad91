"""The ``vto`` command line: the composition root.

This module, and only this one, may import from every package (``ledger``, ``infra``,
``projections``, ``pipeline``, ``generator_worker``, ``command_api``): it wires each process
together from the settings. Everything else imports downward only (docs/architecture.md; the
import-linter contract in ``pyproject.toml`` enforces it). Imports of upper packages are made inside the
commands, so ``vto migrate`` and ``vto ledger audit`` load no web or generation code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import typer

from infra.database import database_url
from infra.migrate import upgrade
from infra.orm import make_engine, make_sessionmaker
from infra.settings import get_settings
from infra.storage import storage_from_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger("vto")

# Variables that used to mean something and now do nothing: ``vto serve`` and ``vto api`` say
# so when one is still set, so that an operator does not believe it still works.
RETIRED_VARIABLES = {
    "VTO_ADMIN_EMAILS": "an email address no longer makes an admin; admins are the accounts "
    "holding the stored admin role: grant it with `vto admin add EMAIL` (see `vto admin list`)",
}

app = typer.Typer(
    help="VTO backend: try-on generation with an event-sourced point ledger.", no_args_is_help=True
)


@app.command()
def migrate(revision: str = typer.Argument("head", help="Alembic revision to upgrade to.")) -> None:
    """Apply the database migrations (to VTO_DATABASE_URL, or the embedded PostgreSQL)."""
    upgrade(database_url(get_settings()), revision)
    typer.echo(f"database migrated to {revision}")


ledger_app = typer.Typer(help="The point ledger: audit (and rebuild) its read models.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")


@ledger_app.command("audit")
def ledger_audit(
    user: Annotated[UUID | None, typer.Option("--user", help="Audit one user's account only.")] = None,
    wait: Annotated[
        float | None,
        typer.Option("--wait", min=0, help="Seconds to wait for the read models to catch up (default 10)."),
    ] = None,
) -> None:
    """Replay the event store, check the ledger invariants and compare with the read models.
    Exit status 0 only when everything matches."""
    from projections.audit import audit

    url = database_url(get_settings())
    report = audit(url, user) if wait is None else audit(url, user, wait_s=wait)
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)


@ledger_app.command("rebuild")
def ledger_rebuild(
    name: list[str] | None = typer.Argument(None, help="Projections to rebuild (default: all)."),  # noqa: B008
) -> None:
    """Rebuild read models from the start of the log into fresh tables and swap them in."""
    from projections.rebuild import rebuild
    from projections.registry import all_projections, projection

    url = database_url(get_settings())
    projections = [projection(n) for n in name] if name else all_projections()
    position = rebuild(url, projections)  # one read of the log for all of them
    for p in projections:
        typer.echo(f"{p.name}: rebuilt up to position {position}")


admin_app = typer.Typer(
    help="Administrators: the accounts holding the stored admin role (the only way to become one).",
    no_args_is_help=True,
)
app.add_typer(admin_app, name="admin")

ADMIN_GRANTED_BY = "vto admin add"  # recorded as ``user_roles.granted_by``


@contextlib.contextmanager
def _database_session() -> Iterator[Session]:
    """One transaction on the server's database (the same settings as ``vto serve``):
    committed when the block ends normally, rolled back otherwise."""
    engine = make_engine(database_url(get_settings()), pool_size=1)
    try:
        with make_sessionmaker(engine)() as session, session.begin():
            yield session
    finally:
        engine.dispose()


@admin_app.command("add")
def admin_add(email: Annotated[str, typer.Argument(help="The email of a registered account.")]) -> None:
    """Make the registered account of EMAIL an admin (effective at its next request).
    Exit status 1 when no live account has that email."""
    from command_api.users import roles
    from command_api.users.errors import NoLiveUser

    try:
        with _database_session() as session:
            user, added = roles.add_admin(session, email, granted_by=ADMIN_GRANTED_BY)
    except NoLiveUser as exc:
        typer.echo(f"error: {exc.detail}; the account must register first", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{user.email} ({user.id}) {'is now' if added else 'was already'} an admin")


@admin_app.command("remove")
def admin_remove(email: Annotated[str, typer.Argument(help="The email of an admin's account.")]) -> None:
    """Take the admin role from the account of EMAIL (effective at its next request).
    Exit status 1 when no live account has that email."""
    from command_api.users import roles
    from command_api.users.errors import NoLiveUser

    try:
        with _database_session() as session:
            user, removed = roles.remove_admin(session, email)
    except NoLiveUser as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{user.email} ({user.id}) {'is no longer' if removed else 'was not'} an admin")


@admin_app.command("list")
def admin_list() -> None:
    """The admins: email, user id, when and by what the role was granted."""
    from command_api.users import roles

    with _database_session() as session:
        admins = roles.admins(session)
        lines = [
            f"{a.user.email}\t{a.user.id}\t{a.granted_at.isoformat()}\t{a.granted_by or ''}" for a in admins
        ]
    for line in lines:
        typer.echo(line)
    if not lines:
        typer.echo("no admins (grant the role with: vto admin add EMAIL)", err=True)


@app.command()
def projector() -> None:
    """Run every projection runner until interrupted."""
    import threading

    from projections.runner import Projector

    settings = get_settings()
    with Projector(database_url(settings), poll_interval=settings.projection_poll_interval_s):
        typer.echo("projections running; Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Run everything in one process: API, projections and the job pipeline. With no
    configuration it uses the embedded defaults (embedded PostgreSQL in ./.vto, in-process
    queue, local files, offline generator)."""
    from command_api.app import create_app
    from command_api.serve import run_http
    from command_api.services import build_services
    from generator_worker.embedded import start_pipeline

    _log_to_stderr()
    warn_retired_variables()
    settings = get_settings()
    services = build_services(settings, run_projections=True)
    try:
        pipeline = start_pipeline(settings, services.url, services.ledger, services.storage)
        try:
            with _webhook_dispatcher(services.url, f"http://{_reachable(host)}:{port}"):
                mode = "embedded defaults" if settings.embedded else "configured database"
                typer.echo(f"VTO API on http://{host}:{port} ({mode}); docs: http://{host}:{port}/docs")
                run_http(create_app(services), host, port)
        finally:
            pipeline.stop()
    finally:
        services.close()


@app.command()
def api(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, max=64, help="uvicorn worker processes."),
) -> None:
    """Run the HTTP API alone (projections, relay, workers run as their own processes)."""
    from command_api.app import create_app
    from command_api.serve import run_http, run_http_workers
    from command_api.services import build_services

    _log_to_stderr()
    warn_retired_variables()
    settings = get_settings()
    if workers > 1:
        upgrade(database_url(settings))  # once, before the worker processes start
        typer.echo(f"VTO API on http://{host}:{port} with {workers} workers; docs: http://{host}:{port}/docs")
        run_http_workers(host, port, workers)
        return
    services = build_services(settings, run_projections=False)
    try:
        typer.echo(f"VTO API on http://{host}:{port}; docs: http://{host}:{port}/docs")
        run_http(create_app(services), host, port)
    finally:
        services.close()


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")


def warn_retired_variables() -> list[str]:
    """Log a warning for each retired variable still set; returns their names."""
    found = [name for name in RETIRED_VARIABLES if os.environ.get(name)]
    for name in found:
        log.warning("%s is set and ignored: %s", name, RETIRED_VARIABLES[name])
    return found


def _reachable(host: str) -> str:
    """An address of this host that links can name (not the wildcard it listens on)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - compared, not bound


@contextlib.contextmanager
def _webhook_dispatcher(url: str, local_base_url: str) -> Iterator[object]:
    """The webhook dispatcher (``pipeline.webhooks``) of this process, running for the block.
    A webhook's ``data`` is the job as the API shows it (``command_api.webhooks.service``),
    rendered on an engine of its own (2 connections) so that it never takes the API's; its
    links are absolute: under ``VTO_PUBLIC_BASE_URL``, else under ``local_base_url``."""
    from command_api.webhooks.service import job_renderer
    from pipeline.webhooks.dispatcher import WebhookDispatcher

    settings = get_settings()
    if not settings.public_base_url and not settings.embedded:
        log.warning("VTO_PUBLIC_BASE_URL is unset: webhook links point at %s", local_base_url)
    engine = make_engine(url, pool_size=2)
    storage = storage_from_settings(settings)
    render = job_renderer(
        engine, storage, settings.webhook_link_ttl_s, settings.public_base_url or local_base_url
    )
    dispatcher = WebhookDispatcher.build(settings, url, render).start()
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        engine.dispose()


@app.command()
def webhooks(
    base_url: Annotated[
        str,
        typer.Option(help="Where links in webhooks point when VTO_PUBLIC_BASE_URL is unset (the API)."),
    ] = "http://127.0.0.1:8000",
) -> None:
    """Deliver the jobs' signed webhooks (Standard Webhooks): follow the ledger and the
    workers' progress, sign, post, retry on schedule. Several may run at once."""
    import threading

    from prometheus_client import start_http_server

    from pipeline.webhooks import metrics

    _log_to_stderr()
    settings = get_settings()
    server = None
    if settings.webhooks_metrics_port is not None:
        server, _ = start_http_server(settings.webhooks_metrics_port, registry=metrics.REGISTRY)
    try:
        with _webhook_dispatcher(database_url(settings), base_url):
            typer.echo("webhooks running; Ctrl-C to stop")
            threading.Event().wait()
    finally:
        if server is not None:
            server.shutdown()


@app.command()
def relay() -> None:
    """Publish job requests from the event store to the queue (outbox relay)."""
    from generator_worker.runtime import run_relay

    run_relay(get_settings())


@app.command()
def worker(concurrency: int = typer.Option(1, min=1, max=32, help="Worker threads.")) -> None:
    """Consume job requests, generate, store outputs and publish results."""
    from generator_worker.runtime import run_worker

    run_worker(get_settings(), concurrency=concurrency)


@app.command()
def ingestor() -> None:
    """Apply job results to the ledger (settle, or fail and refund), once per job."""
    from generator_worker.runtime import run_ingestor

    run_ingestor(get_settings())


@app.command()
def sweeper() -> None:
    """Fail and refund reservations older than VTO_JOB_TIMEOUT_S."""
    from generator_worker.runtime import run_sweeper

    run_sweeper(get_settings())


def stop_on_signals() -> None:
    """SIGTERM (what systemd, Docker and Kubernetes send) and SIGINT (Ctrl+C) end the process
    cleanly, exit status 0: the first one raises ``SystemExit`` in the main thread, so every
    ``finally`` and ``atexit`` handler runs (``vto serve`` stops its pipeline and services,
    then pgserver stops the embedded PostgreSQL when this was its last user). Later signals
    are ignored while that runs. uvicorn takes both signals over while it serves and raises
    the one it got again once it has shut down gracefully, which lands here. The pipeline
    processes (``vto relay``, ``worker``, ...) install their own handlers that set their stop
    event (``generator_worker.runtime``)."""

    def stop(signum: int, _frame: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _already_stopping)
        logging.getLogger("vto").info("%s: stopping", signal.Signals(signum).name)
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)


def _already_stopping(signum: int, _frame: object) -> None:
    logging.getLogger("vto").info("%s: already stopping", signal.Signals(signum).name)


def main() -> None:
    # pgserver's platformdirs complains when XDG_RUNTIME_DIR is unset (containers, CI): noise.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    stop_on_signals()
    app()
