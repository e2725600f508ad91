"""Builds the ledger application on its storage: PostgreSQL (psycopg 3) or in memory."""

from __future__ import annotations

from datetime import timedelta

from infra.database import conninfo
from infra.settings import Settings
from ledger.application import Clock, LedgerApplication, LedgerOptions, utc_now


def ledger_options(settings: Settings) -> LedgerOptions:
    return LedgerOptions(
        policy=settings.pricing(),
        key_ttl=timedelta(seconds=settings.idempotency_key_ttl_s),
        max_attempts=settings.command_max_attempts,
        snapshot_interval=settings.snapshot_interval,
        cache_size=settings.account_cache_size,
    )


def postgres_env(url: str, pool_size: int, create_table: bool = False) -> dict[str, str]:
    """eventsourcing's PostgreSQL settings for a database URL. Tables come from the
    Alembic migrations, so the library's own table creation is off unless asked for."""
    params = conninfo(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": params.get("dbname", "postgres"),
        "POSTGRES_HOST": params.get("host", "127.0.0.1"),
        "POSTGRES_PORT": params.get("port", "5432"),
        "POSTGRES_USER": params.get("user", "postgres"),
        "POSTGRES_PASSWORD": params.get("password", ""),
        # eventsourcing opens POSTGRES_POOL_SIZE connections at once and keeps them; every
        # process has a ledger, so keep two open and grow on demand up to pool_size + 2.
        "POSTGRES_POOL_SIZE": str(min(2, pool_size)),
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        "POSTGRES_CONNECT_TIMEOUT": "10",
        "POSTGRES_PRE_PING": "y",
        "CREATE_TABLE": "y" if create_table else "n",
    }


MEMORY_ENV = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


def postgres_ledger(settings: Settings, url: str, clock: Clock = utc_now) -> LedgerApplication:
    return LedgerApplication(
        env=postgres_env(url, settings.db_pool_size), options=ledger_options(settings), clock=clock
    )


def memory_ledger(settings: Settings, clock: Clock = utc_now) -> LedgerApplication:
    return LedgerApplication(env=MEMORY_ENV, options=ledger_options(settings), clock=clock)
