"""SQLAlchemy 2 plumbing for the catalog tables: the declarative base, engines, sessions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from infra.database import sqlalchemy_url
from infra.settings import Settings


class Base(DeclarativeBase):
    """Base of every catalog model. Tables themselves are created by Alembic migrations."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class CreatedMixin:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def make_engine(
    url: str,
    pool_size: int,
    max_overflow: int = 0,
    pool_timeout: float = 5.0,
    plan_cache_mode: str | None = None,
) -> Engine:
    """An engine that opens at most ``pool_size + max_overflow`` connections (the settings
    ``db_pool_size``, ``db_max_overflow``; docs/operations.md "Connection budget"). A checkout that finds
    them all in use waits ``pool_timeout`` seconds, then raises ``sqlalchemy.exc.TimeoutError``,
    which the API answers with 503 and ``Retry-After``. FastAPI's thread pool (40 threads) may
    run more requests than that at once: the others wait for a connection, bounded.

    No ping before each checkout (a round trip per request): a connection that a database
    restart broke fails its first use, SQLAlchemy then drops every pooled connection of that
    generation, and that request is answered 503 + Retry-After.

    ``plan_cache_mode``: PostgreSQL's setting of that name on each new connection (the setting
    ``db_plan_cache_mode``); None leaves the server's. Set by a statement, not as a startup
    option, which a pooler (PgBouncer) may refuse."""
    engine = create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_pre_ping=False,
    )
    if plan_cache_mode is not None:
        mode = plan_cache_mode

        @event.listens_for(engine, "connect")
        def _set_plan_cache_mode(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cur:
                cur.execute("SELECT set_config('plan_cache_mode', %s, false)", (mode,))
            dbapi_connection.commit()

    return engine


def engine_from_settings(url: str, settings: Settings) -> Engine:
    """The catalog engine of an API process, sized by the settings."""
    return make_engine(
        url,
        settings.db_pool_size,
        settings.db_max_overflow,
        settings.db_pool_timeout_s,
        settings.db_plan_cache_mode,
    )


def api_process_connections(settings: Settings) -> int:
    """The most PostgreSQL connections one ``vto api`` process opens (docs/operations.md "Connection
    budget"): its catalog pool, its ledger's pool and the position watcher's ``LISTEN``."""
    catalog = settings.db_pool_size + settings.db_max_overflow
    return catalog + settings.ledger_pool_size + settings.ledger_max_overflow + 1


def make_sessionmaker(engine: Engine) -> sessionmaker:  # type: ignore[type-arg]
    return sessionmaker(engine, expire_on_commit=False)
