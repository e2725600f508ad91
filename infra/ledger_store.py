"""Builds the ledger application on its storage: PostgreSQL (psycopg 3), with the fast account
store (``infra.account_store``), or in memory, with the library's own (``ledger.store``)."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from eventsourcing.postgres import ConnectionPool
from psycopg_pool import PoolTimeout

from infra.account_store import postgres_account_store
from infra.database import conninfo
from infra.settings import Settings
from ledger.application import Clock, LedgerApplication, LedgerOptions, utc_now
from ledger.store import ReferenceStore


def ledger_options(settings: Settings) -> LedgerOptions:
    return LedgerOptions(
        policy=settings.pricing(),
        key_ttl=timedelta(seconds=settings.idempotency_key_ttl_s),
        max_attempts=settings.command_max_attempts,
        snapshot_interval=settings.snapshot_interval,
        cache_size=settings.account_cache_size,
    )


def postgres_env(
    url: str,
    pool_size: int,
    max_overflow: int = 0,
    pool_timeout_s: float = 5.0,
    create_table: bool = False,
) -> dict[str, str]:
    """eventsourcing's PostgreSQL settings for a database URL. Tables come from the
    Alembic migrations, so the library's own table creation is off unless asked for.

    The recorder's pool (psycopg_pool) opens ``pool_size`` connections, keeps them, and opens
    up to ``max_overflow`` more under load. Its ``POSTGRES_CONNECT_TIMEOUT`` is how long a
    command waits for a connection (free or new); eventsourcing reads whole seconds only, so
    ``postgres_ledger`` sets the exact timeout on the pool, and makes it final
    (``LedgerPoolTimeout``, which the API answers with 503 and ``Retry-After``)."""
    params = conninfo(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": params.get("dbname", "postgres"),
        "POSTGRES_HOST": params.get("host", "127.0.0.1"),
        "POSTGRES_PORT": params.get("port", "5432"),
        "POSTGRES_USER": params.get("user", "postgres"),
        "POSTGRES_PASSWORD": params.get("password", ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(max_overflow),
        "POSTGRES_CONNECT_TIMEOUT": str(max(1, math.ceil(pool_timeout_s))),
        # No ping per checkout (a round trip per command): eventsourcing retries a command
        # whose connection a database restart broke, on another connection.
        "POSTGRES_PRE_PING": "n",
        "CREATE_TABLE": "y" if create_table else "n",
    }


MEMORY_ENV = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


class LedgerPoolTimeout(TimeoutError):
    """The ledger's pool had no connection within ``db_pool_timeout_s``: all in use, or
    PostgreSQL refusing new ones (``too many clients``). The API answers 503 + Retry-After.

    Raised instead of psycopg_pool's ``PoolTimeout``, an ``OperationalError`` that
    eventsourcing would try ten times (0.2 s apart), making a request wait ten timeouts."""


class _BudgetedPool(ConnectionPool[Any]):
    """eventsourcing's pool, whose timeout is final (``LedgerPoolTimeout``)."""

    def getconn(self, timeout: float | None = None) -> Any:
        try:
            return super().getconn(timeout)
        except PoolTimeout as exc:
            raise LedgerPoolTimeout(str(exc)) from exc


def ledger_pool(ledger: LedgerApplication) -> ConnectionPool[Any]:
    """The connection pool of a ledger on PostgreSQL."""
    pool = ledger.recorder.datastore.pool  # type: ignore[attr-defined]
    assert isinstance(pool, ConnectionPool)
    return pool


def postgres_ledger(
    settings: Settings, url: str, clock: Clock = utc_now, *, reference: bool = False
) -> LedgerApplication:
    """The ledger of a process, its pool sized by the settings ``ledger_pool_size``,
    ``ledger_max_overflow`` and ``db_pool_timeout_s`` (docs/operations.md "Connection
    budget"), on the fast account store; ``reference``: on the library's own path instead
    (``ledger.store``), for the tests that hold the two side by side."""
    env = postgres_env(
        url, settings.ledger_pool_size, settings.ledger_max_overflow, settings.db_pool_timeout_s
    )
    ledger = LedgerApplication(
        env=env,
        options=ledger_options(settings),
        clock=clock,
        store=ReferenceStore
        if reference
        else postgres_account_store(settings.ledger_append_batch_max, settings.ledger_contention_window_s),
    )
    pool = ledger_pool(ledger)
    pool.timeout = settings.db_pool_timeout_s
    pool.__class__ = _BudgetedPool  # the pool eventsourcing built, its timeout now final
    return ledger


def memory_ledger(settings: Settings, clock: Clock = utc_now) -> LedgerApplication:
    return LedgerApplication(env=MEMORY_ENV, options=ledger_options(settings), clock=clock)
