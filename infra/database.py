"""Where the database is: the configured URL, or an embedded PostgreSQL in the data dir."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra.settings import Settings

_embedded_lock = threading.Lock()
_embedded: dict[Path, Any] = {}


def embedded_postgres_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL kept in ``data_dir/pgdata``; return its URL.

    pgserver runs one server per data directory and shares it between the processes that
    ask for it (a ``vto ledger audit`` beside a running ``vto serve`` reaches the same
    server); it stops when the last of them exits."""
    import pgserver  # imported here: only the embedded mode needs it

    pgdata = (data_dir / "pgdata").resolve()
    with _embedded_lock:
        server = _embedded.get(pgdata)
        if server is None:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
            _embedded[pgdata] = server
        return str(server.get_uri())


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stop the embedded server this process started for ``data_dir`` (if any)."""
    with _embedded_lock:
        server = _embedded.pop((data_dir / "pgdata").resolve(), None)
    if server is not None:
        server.cleanup()


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
