"""Where the database is: the configured URL, or an embedded PostgreSQL in the data dir."""

from __future__ import annotations

import atexit
import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra.settings import Settings

_embedded_lock = threading.Lock()
_embedded: dict[Path, Any] = {}


def embedded_postgres_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL kept in ``data_dir/pgdata``; return its URL.

    pgserver runs one server per data directory and shares it between the processes that
    ask for it (a ``vto ledger audit`` beside a running ``vto serve`` reaches the same
    server); it stops when the last of them exits (normally, or on SIGTERM/SIGINT: see
    ``infra.cli``). What a process killed outright (SIGKILL, power loss) left behind is
    cleared first: its entry among the server's users, and a ``postmaster.pid`` whose
    process is gone or is not this directory's PostgreSQL."""
    import pgserver  # imported here: only the embedded mode needs it

    pgdata = (data_dir / "pgdata").resolve()
    with _embedded_lock:
        server = _embedded.get(pgdata)
        if server is None:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            _clear_dead_handles(pgdata)
            server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
            # Runs before pgserver's own exit handler (registered earlier): it stops the
            # server it knows by process id, which a restart of PostgreSQL has changed.
            atexit.register(_follow_restarts, server)
            _embedded[pgdata] = server
        return str(server.get_uri())


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stop the embedded server this process started for ``data_dir`` (if any)."""
    with _embedded_lock:
        server = _embedded.pop((data_dir / "pgdata").resolve(), None)
    if server is not None:
        _follow_restarts(server)
        server.cleanup()


def _follow_restarts(server: Any) -> None:
    """Point pgserver's handle at the postmaster running now (PostgreSQL may have been
    restarted since it started it, under another process id)."""
    from pgserver.utils import PostmasterInfo  # type: ignore[import-untyped]

    with contextlib.suppress(Exception):
        info = PostmasterInfo.read_from_pgdata(server.pgdata)
        if info is not None and info.is_running():
            server._postmaster_info = info


def embedded_postgres_pid(data_dir: Path) -> int | None:
    """The process id of the PostgreSQL running on ``data_dir/pgdata``, or None when none
    runs there (no ``postmaster.pid``, or its process is not that directory's postmaster)."""
    pgdata = (data_dir / "pgdata").resolve()
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if _is_postmaster_of(pid, pgdata) else None


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    import psutil  # pgserver's dependency

    try:
        process = psutil.Process(pid)
        return process.name() == "postgres" and str(pgdata) in process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True  # someone else's process: leave it alone


def _clear_dead_handles(pgdata: Path) -> None:
    """Forget what processes killed outright left in pgdata: their ids among the server's
    users (pgserver stops the server when its last user exits; a dead id would keep it
    running forever) and a stale ``postmaster.pid`` (its process id may since have been
    taken by another process, which pgserver would take for a running server)."""
    import psutil
    from pgserver.postgres_server import PostgresServer  # type: ignore[import-untyped]

    if not pgdata.exists():
        return
    with PostgresServer._lock:  # the lock pgserver itself holds around this list
        handles = pgdata / ".handle_pids.json"
        try:
            pids = json.loads(handles.read_text())
        except (OSError, ValueError):
            pids = None
        if isinstance(pids, list):
            alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
            if alive != pids:
                handles.write_text(json.dumps(alive))
        lock = pgdata / "postmaster.pid"
        if lock.exists() and embedded_postgres_pid(pgdata.parent) is None:
            lock.unlink(missing_ok=True)


def database_url(settings: Settings) -> str:
    """The libpq URL of the database: ``VTO_DATABASE_URL`` or the embedded server."""
    if settings.database_url:
        return settings.database_url
    return embedded_postgres_url(settings.data_dir)


def conninfo(url: str, **overrides: str) -> dict[str, str]:
    """A libpq URL as its parameters (host, port, user, password, dbname, ...)."""
    params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    params.update(overrides)
    return params


def with_dbname(url: str, dbname: str) -> str:
    """The same server, another database."""
    return make_conninfo(url, dbname=dbname)


def sqlalchemy_url(url: str) -> str:
    """A SQLAlchemy URL (psycopg 3 driver) for a libpq URL or key=value conninfo."""
    from sqlalchemy.engine import URL

    params = conninfo(url)
    query = {k: v for k, v in params.items() if k not in {"host", "port", "user", "password", "dbname"}}
    host = params.get("host")
    if host and host.startswith("/"):
        query["host"] = host
        host = None
    return URL.create(
        "postgresql+psycopg",
        username=params.get("user"),
        password=params.get("password") or None,
        host=host,
        port=int(params["port"]) if params.get("port") else None,
        database=params.get("dbname"),
        query=query,
    ).render_as_string(hide_password=False)


class ReopeningConnection:
    """One autocommit connection for a single thread's loop: opened on first use, and again
    after ``close()`` (a loop closes it when a pass fails, and the next pass reconnects)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None

    def get(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=True)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
