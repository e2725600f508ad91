"""SQLAlchemy 2 plumbing for the catalog tables: the declarative base, engines, sessions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import DateTime, Engine, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from infra.database import sqlalchemy_url


class Base(DeclarativeBase):
    """Base of every catalog model. Tables themselves are created by Alembic migrations."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class CreatedMixin:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# FastAPI runs sync endpoints on AnyIO's thread pool (40 threads): every one of them may hold
# a session at once, so the engine must be able to open that many connections; otherwise
# requests queue for a connection behind requests that wait for their read-your-writes.
REQUEST_THREADS = 40


def make_engine(url: str, pool_size: int) -> Engine:
    return create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=max(pool_size, REQUEST_THREADS - pool_size),
        pool_timeout=10,
        pool_pre_ping=True,
    )


def make_sessionmaker(engine: Engine) -> sessionmaker:  # type: ignore[type-arg]
    return sessionmaker(engine, expire_on_commit=False)
