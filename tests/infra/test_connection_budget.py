"""The connection budget (docs/operations.md "Connection budget"): the settings size every pool, and an API
process under more concurrent requests than it has connections never opens more than
``api_process_connections(settings)``; the requests wait their turn and succeed."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.conninfo import make_conninfo

from command_api.app import create_app
from infra.ledger_store import ledger_pool
from infra.orm import api_process_connections
from infra.settings import Settings
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
def api_process(budget_settings: Settings, pg_url: str) -> Iterator[Any]:
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


def deployment_connections(settings: Settings, api: int, workers: int, concurrency: int = 1) -> int:
    """The formula of docs/operations.md: the most connections of a split deployment with ``api`` API
    processes and ``workers`` worker processes (``--concurrency``), beside one projector,
    relay, ingestor and sweeper. Every pipeline process builds a ledger (its pool)."""
    ledger = settings.ledger_pool_size + settings.ledger_max_overflow
    projector = 2 * 2  # two projections, each a batch connection and a LISTEN
    relay = 2 + ledger  # a runner: a batch connection and a LISTEN
    worker = concurrency + ledger  # one attempts connection per worker thread
    ingestor = 1 + ledger  # the progress recorder's connection
    sweeper = 1 + ledger  # one connection per pass
    fixed = projector + relay + ingestor + sweeper
    return api * api_process_connections(settings) + workers * worker + fixed


def test_the_default_deployment_fits_the_embedded_servers_max_connections(pg_server_url: str) -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    # docs/operations.md: 21 x 2 API + 6 x 2 workers + 4 + 7 + 6 + 6 = 77.
    assert deployment_connections(defaults, api=2, workers=2) == 77
    with psycopg.connect(pg_server_url) as conn:
        row = conn.execute("SHOW max_connections").fetchone()
    assert row is not None
    # With room for the one-off commands (vto admin, migrate, audit) and the brief connection
    # a runner opens to record a failing event.
    assert deployment_connections(defaults, api=2, workers=2) + 10 <= int(row[0])


class Sampler:
    """Counts the API process's connections to the test database (every one but the
    projector's and its own) as often as it can until stopped; keeps the peak."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.peak = 0
        self.samples = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, name="connection-sampler", daemon=True)

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.done.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND application_name <> %s",
                    (PROJECTOR,),
                ).fetchone()
                assert row is not None
                self.peak = max(self.peak, int(row[0]))
                self.samples += 1


def test_an_api_process_under_load_stays_within_its_connection_budget(
    budget_settings: Settings, api_process: Any, pg_url: str
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

        sampler = Sampler(pg_url)
        sampler.thread.start()
        try:
            with ThreadPoolExecutor(CLIENTS) as pool:
                results = list(pool.map(request, range(len(orders))))
        finally:
            sampler.done.set()
            sampler.thread.join(10)

    failed = [r for r in results if r[1] not in (200, 202)]
    assert not failed, failed[:3]
    assert sum(1 for kind, _, _ in results if kind == "job") == CLIENTS // 2
    assert sampler.samples > 0
    # More requests at once than connections: the pools were used, and never went past the budget.
    assert budget_settings.db_pool_size + budget_settings.ledger_pool_size + 1 <= sampler.peak <= budget
