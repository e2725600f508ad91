"""Alembic environment: migrates the database the settings point at (or the URL given
through ``config.attributes["url"]`` by ``infra.migrate``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from infra.database import database_url, sqlalchemy_url
from infra.settings import Settings

config = context.config
url = config.attributes.get("url") or database_url(Settings())


def run_migrations_offline() -> None:
    context.configure(url=sqlalchemy_url(url), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
