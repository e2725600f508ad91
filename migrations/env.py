"""Alembic environment: migrates the database the settings point at (or the URL given
through ``config.attributes["url"]`` by ``infra.migrate``).

``target_metadata`` is the API's ORM models (``command_api.models``), so ``alembic check``
(and ``alembic revision --autogenerate``) compares them with the migrated database; a test
runs the check (``tests/migrations/test_drift.py``). The tables in ``SQL_TABLES``
(``migrations/tables.py``) have no ORM model (the event store, whose layout ``eventsourcing``
fixes, and the tables the projections and the pipeline write with SQL): the migrations alone
define them, and the comparison leaves them out. Any other table of the database that no model
describes is reported as drift."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine, pool

from command_api.models import metadata
from infra.database import database_url, sqlalchemy_url
from infra.settings import Settings
from migrations.tables import SQL_TABLES

config = context.config
url = config.attributes.get("url") or database_url(Settings())
target_metadata = metadata


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Compare every table but those that only the migrations define."""
    return not (type_ == "table" and name in SQL_TABLES)


def run_migrations_offline() -> None:
    context.configure(
        url=sqlalchemy_url(url),
        target_metadata=target_metadata,
        include_name=include_name,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_name=include_name,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
