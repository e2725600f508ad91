"""The connection budget (docs/operations.md "Connection budget"): the settings size every pool, and an API
process under more concurrent requests than it has connections never opens more than
``api_process_connections(settings)``; the requests wait their turn and succeed."""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy
from fastapi.testclient import TestClient
from psycopg.conninfo import make_conninfo

from command_api.app import create_app
from infra.ledger_store import ledger_pool, postgres_ledger
from infra.orm import api_process_connections
from infra.settings import Settings
from projections.events import MAX_WORKERS
from projections.registry import all_projections
from projections.runner import Projector
from tests.api_factories import make_user
from tests.test_vto import catalog, job_body

PROJECTOR = "vto-test-projector"
CLIENTS = 32


@pytest.fixture
def budget_settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        db_pool_size=2,
        db_max_overflow=2,
        db_pool_timeout_s=30,
        ledger_pool_size=1,
        ledger_max_overflow=2,
    )


@pytest.fixture
def api_process(budget_settings: Settings, pg_url: str, connections: Connections) -> Iterator[Any]:
    """The services of a ``vto api`` process (no projections; a position watcher), with the
    projections run beside it on connections named ``PROJECTOR`` (another process's)."""
    from command_api.services import build_services

    projector = Projector(make_conninfo(pg_url, application_name=PROJECTOR), poll_interval=1.0).start()
    built = build_services(budget_settings, pg_url, migrate=False, run_projections=False)
    try:
        yield built
    finally:
        built.close()
        projector.stop()


def test_settings_size_the_pools(budget_settings: Settings, api_process: Any) -> None:
    pool = api_process.engine.pool
    assert (pool.size(), pool._max_overflow, pool.timeout()) == (2, 2, 30)
    ledger = ledger_pool(api_process.ledger)
    assert (ledger.min_size, ledger.max_size, ledger.timeout) == (1, 3, 30)
    assert api_process_connections(budget_settings) == 2 + 2 + 1 + 2 + 1
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    # docs/operations.md "Connection budget": 21 per API process by default.
    assert api_process_connections(defaults) == 21


# docs/operations.md "Connection budget", written out by hand for the default settings: per process kind,
# (processes in the deployment, connections each at most). Not recomputed from the settings:
# the test below checks the code's figures against these.
DEFAULT_DEPLOYMENT = {
    "api": (2, 21),  # catalog 10 + 5, ledger 2 + 3, the position watcher's LISTEN
    "worker": (2, 6),  # one attempts connection (concurrency 1) + the ledger pool's 5
    "projector": (1, 4),  # two projections, each a batch connection and a LISTEN
    "relay": (1, 7),  # its runner's 2 + the ledger pool's 5
    "ingestor": (1, 6),  # the progress recorder's 1 + 5
    "sweeper": (1, 6),  # one per pass + 5
}
DEFAULT_TOTAL = 77
PROJECTOR_REBUILDING = 10  # docs/operations.md: the projector while it rebuilds at its start
LEDGER_POOL = 5  # 2 kept + 3 under load


def test_the_default_deployment_fits_the_embedded_servers_max_connections(
    pg_server_url: str, pg_url: str
) -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert sum(n * each for n, each in DEFAULT_DEPLOYMENT.values()) == DEFAULT_TOTAL
    # The figures the code gives for the parts it sizes.
    assert api_process_connections(defaults) == DEFAULT_DEPLOYMENT["api"][1]
    ledger = postgres_ledger(defaults, pg_url)
    try:
        pool = ledger_pool(ledger)
        assert (pool.min_size, pool.max_size) == (2, LEDGER_POOL)
    finally:
        ledger.close()
    assert 2 * len(all_projections()) == DEFAULT_DEPLOYMENT["projector"][1]
    # A projector far behind at its start rebuilds first: its connection and reader, and two
    # per worker process.
    assert 2 + 2 * MAX_WORKERS == PROJECTOR_REBUILDING
    rebuilding = DEFAULT_TOTAL - DEFAULT_DEPLOYMENT["projector"][1] + PROJECTOR_REBUILDING
    with psycopg.connect(pg_server_url) as conn:
        row = conn.execute("SHOW max_connections").fetchone()
    assert row is not None
    # With room for the one-off commands (vto admin, migrate, audit) and the brief connection
    # a runner opens to record a failing event.
    assert int(row[0]) >= DEFAULT_TOTAL + 10
    assert int(row[0]) >= rebuilding + 10


class Connections:
    """Every PostgreSQL connection this process opens through psycopg (SQLAlchemy's and
    psycopg_pool's included) but the projector's, and the most of them open at once: counted
    at each connect, the only moment the number can reach a new peak, so no peak is missed."""

    def __init__(self) -> None:
        self.open: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        self.opened = 0
        self.peak = 0
        self._lock = threading.Lock()

    def connected(self, conn: psycopg.Connection[Any], conninfo: str, kwargs: dict[str, Any]) -> None:
        if PROJECTOR in conninfo or kwargs.get("application_name") == PROJECTOR:
            return
        with self._lock:
            self.open.add(conn)
            self.opened += 1
            self.peak = max(self.peak, sum(1 for c in self.open if not c.closed))


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Connections:
    """Counts the connections opened from here on (before the API process is built)."""
    counted = Connections()
    connect = psycopg.Connection.connect.__func__  # type: ignore[attr-defined]

    def counting(cls: type[psycopg.Connection[Any]], conninfo: str = "", **kwargs: Any) -> Any:
        conn = connect(cls, conninfo, **kwargs)
        counted.connected(conn, conninfo, kwargs)
        return conn

    monkeypatch.setattr(psycopg.Connection, "connect", classmethod(counting))
    monkeypatch.setattr(psycopg, "connect", psycopg.Connection.connect)
    return counted


class CatalogGate:
    """Holds the first ``parties`` checkouts of the catalog pool until that many are out at
    once: the pool is then at its largest, whatever the machine's speed."""

    def __init__(self, engine: Any, parties: int) -> None:
        self.parties = parties
        self.barrier = threading.Barrier(parties)
        self.armed = False
        self.held = 0
        self.broken = False
        self._lock = threading.Lock()
        sqlalchemy.event.listen(engine.pool, "checkout", self.checkout)

    def checkout(self, *args: Any) -> None:
        with self._lock:
            if not self.armed or self.held >= self.parties:
                return
            self.held += 1
        try:
            self.barrier.wait(timeout=60)
        except threading.BrokenBarrierError:
            self.broken = True


def test_an_api_process_under_load_stays_within_its_connection_budget(
    budget_settings: Settings, api_process: Any, connections: Connections
) -> None:
    budget = api_process_connections(budget_settings)
    callers = [make_user(api_process) for _ in range(4)]
    with TestClient(create_app(api_process)) as client:
        orders = []
        for caller in callers:
            api_process.ledger.grant_credits(caller.id, 100, "load")
            items = catalog(client, caller)
            orders += [(caller, items) for _ in range(CLIENTS // len(callers))]

        def request(i: int) -> tuple[str, int, str]:
            caller, items = orders[i]
            if i % 2:
                response = client.get("/api/v1/points", headers=caller.headers)
                return "points", response.status_code, response.text
            headers = {**caller.headers, "Idempotency-Key": f"load-{uuid.uuid4().hex}"}
            response = client.post("/api/v1/vto/jobs", json=job_body(items), headers=headers)
            return "job", response.status_code, response.text

        catalog_pool = budget_settings.db_pool_size + budget_settings.db_max_overflow
        gate = CatalogGate(api_process.engine, catalog_pool)
        gate.armed = True
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(request, range(len(orders))))

    failed = [r for r in results if r[1] not in (200, 202)]
    assert not failed, failed[:3]
    assert sum(1 for kind, _, _ in results if kind == "job") == CLIENTS // 2
    # More requests at once than connections: the catalog pool was at its largest (the gate
    # held its first checkouts until all were out), and the process never went past its budget.
    assert gate.held == catalog_pool and not gate.broken
    assert catalog_pool < connections.peak <= budget, (connections.peak, connections.opened)
