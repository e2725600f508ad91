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
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import typer

from infra.console import announce_stop, configure_logging, divert_native_stderr
from infra.database import database_url
from infra.migrate import upgrade
from infra.orm import make_engine, make_sessionmaker
from infra.settings import Settings, get_settings
from infra.storage import storage_from_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger("vto")

# Variables that used to mean something and now do nothing: ``vto serve`` and ``vto api`` say
# so when one is still set, so that an operator does not believe it still works.
RETIRED_VARIABLES = {
    "VTO_ADMIN_EMAILS": "an email address no longer makes an admin; admins are the accounts "
    "holding the stored admin role: grant it with `vto admin add EMAIL` (see `vto admin list`)",
    "FORWARDED_ALLOW_IPS": "uvicorn's own proxy headers are off; name the proxies whose "
    "X-Forwarded-For is believed in VTO_TRUSTED_PROXIES",
}

app = typer.Typer(
    help="VTO backend: try-on generation with an event-sourced point ledger.\n\n"
    "Start with `vto serve`; `vto COMMAND --help` tells more.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # paragraphs reflowed to the terminal's width
)
START, DATA, PROCESSES = "Start here", "Database and ledger", "Processes of a deployment (one each)"


def migrate(revision: str = typer.Argument("head", help="Alembic revision to upgrade to.")) -> None:
    """Apply the database migrations.

    To VTO_DATABASE_URL, or to the embedded PostgreSQL in the data directory when it is unset."""
    upgrade(database_url(get_settings()), revision)
    typer.echo(f"database migrated to {revision}")


ledger_app = typer.Typer(
    help="Audit the point ledger against its read models; rebuild them.", no_args_is_help=True
)


@ledger_app.command("audit")
def ledger_audit(
    user: Annotated[UUID | None, typer.Option("--user", help="Audit one user's account only.")] = None,
    wait: Annotated[
        float | None,
        typer.Option("--wait", min=0, help="Seconds to wait for the read models to catch up (default 10)."),
    ] = None,
) -> None:
    """Replay the event store, check the invariants, compare the read models.

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
    """Rebuild read models from the whole log into fresh tables, then swap them in."""
    from projections.rebuild import rebuild
    from projections.registry import all_projections, projection

    url = database_url(get_settings())
    projections = [projection(n) for n in name] if name else all_projections()
    position = rebuild(url, projections)  # one read of the log for all of them
    for p in projections:
        typer.echo(f"{p.name}: rebuilt up to position {position}")


class GroupBy(StrEnum):
    DAY = "day"
    USER = "user"


TIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S"]


@ledger_app.command("report")
def ledger_report(
    start: Annotated[
        datetime,
        typer.Option("--from", help="Start of the period (included); no offset: UTC.", formats=TIME_FORMATS),
    ],
    end: Annotated[
        datetime,
        typer.Option("--to", help="End of the period (excluded); no offset: UTC.", formats=TIME_FORMATS),
    ],
    group_by: Annotated[GroupBy, typer.Option("--group-by", help="day (UTC) or user.")] = GroupBy.DAY,
    as_json: Annotated[bool, typer.Option("--json", help="As GET /admin/usage answers it.")] = False,
) -> None:
    """Points charged, refunded, expired, adjusted and granted (paid, promotional) per day or
    user and source, from the accounting lines (GET /admin/usage gives the same)."""
    from command_api.billing import service
    from command_api.billing.schemas import UsageRow
    from command_api.problems import DomainError

    try:
        start, end = service.period(start, end, get_settings().statement_max_days)
    except DomainError as exc:
        raise typer.BadParameter(str(exc), param_hint="--from/--to") from None
    with _database_session() as session:
        report = service.usage_report(session, start, end, "user" if group_by is GroupBy.USER else "day")
    if as_json:
        typer.echo(report.model_dump_json(by_alias=True, indent=2))
        return
    columns = list(UsageRow.model_fields)
    rows = [columns] + [[str(v) for v in row.model_dump().values()] for row in report.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    for r in rows:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


admin_app = typer.Typer(
    help="Grant, take and list the admin role (the only way to be one).",
    no_args_is_help=True,
)

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
def admin_add(
    email: Annotated[str, typer.Argument(help="The email of a registered account.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Grant the role even though the account has not verified its email (anyone can "
            "register any address: be sure who holds this account).",
        ),
    ] = False,
) -> None:
    """Make the account of EMAIL an admin.

    The account must have registered and verified its email; the role counts from its next
    request. Exit status 1 when no live account has that email, or when its owner has not
    verified the address (someone else may have registered it; --force grants it anyway)."""
    from command_api.users import roles
    from command_api.users.errors import NoLiveUser, UnverifiedEmail

    try:
        with _database_session() as session:
            user, added = roles.add_admin(session, email, granted_by=ADMIN_GRANTED_BY, allow_unverified=force)
            verified = user.email_verified_at is not None
    except NoLiveUser as exc:
        typer.echo(f"error: {exc.detail}; the account must register first", err=True)
        raise typer.Exit(1) from None
    except UnverifiedEmail as exc:
        typer.echo(
            f"error: {exc.detail}. Ask the owner to confirm the address (the link mailed at "
            "registration, or POST /auth/verify-email/resend), or use --force if you know who "
            "holds this account",
            err=True,
        )
        raise typer.Exit(1) from None
    if not verified:
        typer.echo(
            f"warning: {user.email} has not verified its email address; it was made an admin "
            "because of --force",
            err=True,
        )
    typer.echo(f"{user.email} ({user.id}) {'is now' if added else 'was already'} an admin")


@admin_app.command("remove")
def admin_remove(email: Annotated[str, typer.Argument(help="The email of an admin's account.")]) -> None:
    """Take the admin role from the account of EMAIL.

    Effective at its next request. Exit status 1 when no live account has that email."""
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
    """List the admins: email, user id, when and by what the role was granted, verified.

    One per line, tab-separated; the last column says whether the account verified its email
    (verified or unverified)."""
    from command_api.users import roles

    with _database_session() as session:
        lines = [
            f"{a.user.email}\t{a.user.id}\t{a.granted_at.isoformat()}\t{a.granted_by or ''}\t"
            f"{'unverified' if a.user.email_verified_at is None else 'verified'}"
            for a in roles.admins(session)
        ]
    for line in lines:
        typer.echo(line)
    if not lines:
        typer.echo("no admins (grant the role with: vto admin add EMAIL)", err=True)


points_app = typer.Typer(help="Grant credits and tickets from the server.", no_args_is_help=True)

POINTS_GRANTED_BY = "vto points grant"  # recorded as the grant events' ``by``


@points_app.command("grant")
def points_grant(
    email: Annotated[str, typer.Argument(help="The email of a live account.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded with the grant).")],
    credits: Annotated[int, typer.Option("--credits", min=0, help="Credits to grant.")] = 0,
    ticket: Annotated[
        list[str] | None,
        typer.Option("--ticket", help="TYPE=COUNT tickets to grant (repeat for several types)."),
    ] = None,
    expires_at: Annotated[
        str | None,
        typer.Option("--expires-at", help="When they expire: an instant with its time zone."),
    ] = None,
    expires_in_days: Annotated[
        int | None, typer.Option("--expires-in-days", min=1, help="Or: they expire in this many days.")
    ] = None,
    category: Annotated[str, typer.Option("--category", help="paid (default) or promotional.")] = "paid",
) -> None:
    """Grant credits and/or tickets to the account of EMAIL (as POST /admin/grants does).

    Each is a lot of its CATEGORY that never expires unless --expires-at or --expires-in-days
    says when. Exit status 1 when the input is not valid or no live account has that email."""
    from datetime import UTC, datetime, timedelta

    from pydantic import ValidationError

    from command_api.points import service
    from command_api.points.schemas import GrantIn
    from command_api.problems import NotFound
    from infra.ledger_store import postgres_ledger
    from ledger.errors import LedgerError

    if expires_at is not None and expires_in_days is not None:
        typer.echo("error: give --expires-at or --expires-in-days, not both", err=True)
        raise typer.Exit(1)
    tickets: dict[str, object] = {}
    for item in ticket or []:
        name, sep, count = item.partition("=")
        if not sep or not name or not count.strip().isdigit():
            typer.echo(f"error: --ticket takes TYPE=COUNT, not {item!r}", err=True)
            raise typer.Exit(1)
        tickets[name] = int(count)
    when: object = expires_at
    if expires_in_days is not None:
        when = datetime.now(UTC) + timedelta(days=expires_in_days)
    try:
        body = GrantIn.model_validate(
            {
                "email": email,
                "credits": credits,
                "tickets": tickets,
                "reason": reason,
                "expires_at": when,
                "category": category,
            }
        )
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            typer.echo(f"error: {where + ': ' if where else ''}{error['msg']}", err=True)
        raise typer.Exit(1) from None
    settings = get_settings()
    ledger = postgres_ledger(settings, database_url(settings))
    try:
        with _database_session() as session:
            user_id, _ = service.grant(session, ledger, POINTS_GRANTED_BY, body)
    except NotFound:
        typer.echo(f"error: no live account has the email {email!r}", err=True)
        raise typer.Exit(1) from None
    except LedgerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        ledger.close()
    what = [f"{body.credits} credits"] if body.credits else []
    what += [f"{n} {t} tickets" for t, n in body.tickets.items()]
    terms = f"{body.category or 'paid'}, " + (
        f"expiring {body.expires_at.isoformat()}" if body.expires_at else "never expiring"
    )
    typer.echo(f"granted {' and '.join(what)} ({terms}) to {body.email} ({user_id})")


def projector() -> None:
    """Keep the read models up to date (every projection runner)."""
    import threading

    from projections.runner import Projector

    settings = get_settings()
    projector = Projector.configured(database_url(settings), settings)
    # Far behind (a new deployment, emptied read models): a rebuild first, while this process
    # runs one thread, so that its worker processes are forked, not started afresh.
    if (position := projector.rebuild_if_far_behind()) is not None:
        typer.echo(f"read models far behind the log: rebuilt to position {position}")
    with projector:
        typer.echo("projections running; Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on (0: any free port)."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Log everything: database, migrations, model runtimes, requests."
    ),
) -> None:
    """Run everything in one process: API, projections, job pipeline.

    With no configuration it uses the embedded defaults: PostgreSQL, files and mail in
    ./.vto, the in-process queue and the offline generator."""
    from command_api.serve import PortUnavailable, bind_socket

    try:  # before anything touches the data directory
        sock = bind_socket(host, port)
    except PortUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None

    from command_api.app import create_app
    from command_api.serve import run_http
    from command_api.services import build_services
    from generator_worker.embedded import start_pipeline

    settings = get_settings()
    if not verbose:
        divert_native_stderr(settings.data_dir / "logs" / "native.log")
    configure_logging(verbose)
    warn_retired_variables()
    services = build_services(settings, run_projections=True)
    try:
        pipeline = start_pipeline(settings, services.url, services.ledger, services.storage)
        try:
            bound = sock.getsockname()[1]
            ready = serve_banner(settings, host, bound)
            with _webhook_dispatcher(services.url, f"http://{_reachable(host)}:{bound}"):
                run_http(
                    create_app(services),
                    host,
                    port,
                    sock=sock,
                    quiet=not verbose,
                    on_ready=lambda: typer.echo(ready),
                    on_signal=announce_stop,
                )
        finally:
            finish_stopping()
            pipeline.stop()
    finally:
        services.close()


def serve_banner(settings: Settings, host: str, port: int) -> str:
    """What ``vto serve`` prints once it listens: where it is, and what to do next."""
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, host)  # noqa: S104
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    base = f"http://{shown}:{port}"
    mode = "the embedded defaults" if settings.embedded else "the configured database"
    return "\n".join(
        [
            f"VTO is up on {mode}. Ctrl+C stops.",
            f"  API       {base}/api/v1",
            f"  API docs  {base}/docs",
            f"  data      {settings.data_dir.resolve()} (files, mail, logs)",
            "Next: register an account (POST /api/v1/auth/register), then in another",
            "terminal make it an admin with `uv run vto admin add YOUR_EMAIL` and grant",
            "it points (POST /api/v1/admin/grants). The README's quickstart does it all.",
        ]
    )


def api(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, max=64, help="uvicorn worker processes."),
) -> None:
    """Run the HTTP API alone.

    The projections, the relay, the workers, the ingestor and the sweeper run as their own
    processes."""
    from command_api.app import create_app
    from command_api.serve import PortUnavailable, bind_socket, run_http, run_http_workers
    from command_api.services import build_services

    configure_logging(verbose=True)
    warn_retired_variables()
    settings = get_settings()
    if workers > 1:
        upgrade(database_url(settings))  # once, before the worker processes start
        typer.echo(f"VTO API on http://{host}:{port} with {workers} workers; docs: http://{host}:{port}/docs")
        run_http_workers(host, port, workers)
        return
    try:
        sock = bind_socket(host, port)
    except PortUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    services = build_services(settings, run_projections=False)
    try:
        base = f"http://{host}:{sock.getsockname()[1]}"
        run_http(
            create_app(services),
            host,
            port,
            sock=sock,
            on_ready=lambda: typer.echo(f"VTO API on {base}; docs: {base}/docs"),
            on_signal=announce_stop,
        )
    finally:
        finish_stopping()
        services.close()


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

    configure_logging(verbose=True)
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


def relay() -> None:
    """Publish each paid job request to the queue (the outbox relay)."""
    from generator_worker.runtime import run_relay

    run_relay(get_settings())


def worker(concurrency: int = typer.Option(1, min=1, max=32, help="Worker threads.")) -> None:
    """Generate the outputs of job requests; publish the results."""
    from generator_worker.runtime import run_worker

    run_worker(get_settings(), concurrency=concurrency)


def ingestor() -> None:
    """Apply job results to the ledger: settle, or fail and refund."""
    from generator_worker.runtime import run_ingestor

    run_ingestor(get_settings())


def sweeper() -> None:
    """Fail and refund the jobs with no result after VTO_JOB_TIMEOUT_S."""
    from generator_worker.runtime import run_sweeper

    run_sweeper(get_settings())


def stop_on_signals() -> None:
    """SIGTERM (what systemd, Docker and Kubernetes send) and SIGINT (Ctrl+C) end the process
    cleanly, exit status 0: the first one raises ``SystemExit`` in the main thread, so every
    ``finally`` and ``atexit`` handler runs (``vto serve`` stops its pipeline and services,
    then pgserver stops the embedded PostgreSQL when this was its last user). Later signals
    are ignored while that runs, and the first prints one line (``infra.console``). While the
    HTTP server runs it takes both signals over (``command_api.serve.run_http``) and returns
    once it has shut down gracefully; ``finish_stopping`` then ignores later ones. The pipeline
    processes (``vto relay``, ``worker``, ...) install their own handlers that set their stop
    event (``generator_worker.runtime``)."""

    def stop(signum: int, _frame: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _already_stopping)
        announce_stop(signum)  # one line, however many signals arrive
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)


def finish_stopping() -> None:
    """The HTTP server has stopped (a signal, or a failure): what follows (the pipeline, the
    services, the embedded PostgreSQL) runs to its end whatever signal arrives now."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _already_stopping)


def _already_stopping(signum: int, _frame: object) -> None:
    announce_stop(signum)


# The commands, listed by ``vto --help`` in this order, under these headings.
app.command(rich_help_panel=START)(serve)
app.add_typer(admin_app, name="admin", rich_help_panel=START)
app.command(rich_help_panel=DATA)(migrate)
app.add_typer(ledger_app, name="ledger", rich_help_panel=DATA)
app.add_typer(points_app, name="points", rich_help_panel=DATA)
app.command(rich_help_panel=PROCESSES)(api)
app.command(rich_help_panel=PROCESSES)(projector)
app.command(rich_help_panel=PROCESSES)(relay)
app.command(rich_help_panel=PROCESSES)(worker)
app.command(rich_help_panel=PROCESSES)(ingestor)
app.command(rich_help_panel=PROCESSES)(sweeper)
app.command(rich_help_panel=PROCESSES)(webhooks)


def main() -> None:
    # pgserver's platformdirs complains when XDG_RUNTIME_DIR is unset (containers, CI): noise.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    stop_on_signals()
    app()
