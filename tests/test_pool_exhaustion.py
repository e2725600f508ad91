"""The connection budget at the API: a request that finds its pool exhausted (the catalog's
SQLAlchemy pool or the ledger's) waits ``VTO_DB_POOL_TIMEOUT_S``, then gets 503 with
``Retry-After`` as a problem, and nothing of it is written; PostgreSQL refusing a connection
(``too many clients``, SQLSTATE 53300) is the same 503, never a 500."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.conninfo import make_conninfo
from sqlalchemy.util import queue as sqla_queue

from command_api.app import create_app
from command_api.deps import get_services
from infra.database import conninfo
from infra.ledger_store import ledger_pool, postgres_ledger
from infra.orm import make_engine, make_sessionmaker
from infra.settings import Settings
from tests.api_factories import Caller, make_user
from tests.pipeline.conftest import wait_until
from tests.test_vto import catalog, job_body

POOL_TIMEOUT_S = 0.5


@pytest.fixture
def tight_settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        db_pool_size=1,
        db_max_overflow=1,
        db_pool_timeout_s=POOL_TIMEOUT_S,
        ledger_pool_size=1,
        ledger_max_overflow=0,
    )


@pytest.fixture
def tight(tight_settings: Settings, pg_url: str) -> Iterator[Any]:
    """Services whose pools hold two catalog connections and one ledger connection."""
    from command_api.services import build_services

    built = build_services(tight_settings, pg_url, migrate=False)
    yield built
    built.close()


@pytest.fixture
def tight_client(tight: Any) -> Iterator[TestClient]:
    with TestClient(create_app(tight)) as test_client:
        yield test_client


@contextmanager
def ledger_pool_held(services: Any) -> Iterator[None]:
    """Every connection of the ledger's pool checked out (as by commands in flight)."""
    pool = ledger_pool(services.ledger)
    held = [pool.getconn() for _ in range(pool.max_size)]
    try:
        yield
    finally:
        for conn in held:
            pool.putconn(conn)


@contextmanager
def catalog_pool_held(services: Any) -> Iterator[None]:
    """Every connection of the catalog engine's pool checked out."""
    pool = services.engine.pool
    with ExitStack() as stack:
        for _ in range(pool.size() + pool._max_overflow):
            stack.enter_context(services.engine.connect())
        yield


def written(services: Any, pg_url: str, caller: Caller) -> tuple[int, int, dict[str, Any]]:
    """What a request could have written: the ledger's position, the caller's job rows and
    balance (as the read models show them, once they include everything written)."""
    position = services.ledger.position()
    assert services.wait_for(position, timeout=30)
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT count(*) FROM vto_job WHERE user_id = %s", (caller.id,)).fetchone()
    assert row is not None
    with TestClient(create_app(services)) as client:
        points = client.get("/api/v1/points", headers=caller.headers)
    assert points.status_code == 200, points.text
    return position, int(row[0]), points.json()


def assert_database_unavailable(response: Any, waited: float) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["Retry-After"] == "1"
    body = response.json()
    assert body["code"] == "database_unavailable" and body["status"] == 503
    assert {"type", "title", "detail"} <= body.keys()
    # It waited the pool timeout (a timeout never ends early; how often it waited is counted
    # by ``ledger_waits`` and ``catalog_waits``, not timed).
    assert waited >= POOL_TIMEOUT_S * 0.9


@contextmanager
def ledger_waits(pool: Any) -> Iterator[dict[str, int]]:
    """What the ledger's pool (psycopg_pool) counted while inside: connection requests
    (``requests_num``) and those that got none in time (``requests_errors``)."""
    before = pool.get_stats()
    counted: dict[str, int] = {}
    yield counted
    after = pool.get_stats()
    counted.update({k: after.get(k, 0) - before.get(k, 0) for k in ("requests_num", "requests_errors")})


@contextmanager
def catalog_waits(services: Any) -> Iterator[list[float]]:
    """Each wait of the catalog pool (SQLAlchemy's queue of connections) that ended without a
    connection while inside, with the timeout it waited."""
    queue = services.engine.pool._pool
    get = queue.get
    timed_out: list[float] = []

    def counting(block: bool = True, timeout: float | None = None) -> Any:
        try:
            return get(block, timeout)
        except sqla_queue.Empty:
            if block:
                timed_out.append(timeout if timeout is not None else -1.0)
            raise

    queue.get = counting
    try:
        yield timed_out
    finally:
        del queue.get


def timed_post(client: TestClient, path: str, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    response = client.post(path, **kwargs)
    return response, time.monotonic() - started


def test_exhausted_ledger_pool_answers_503_and_writes_no_job(
    tight_client: TestClient, tight: Any, pg_url: str
) -> None:
    caller = make_user(tight)
    tight.ledger.grant_credits(caller.id, 5, "test")
    items = catalog(tight_client, caller)
    headers = {**caller.headers, "Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    before = written(tight, pg_url, caller)
    assert before[2]["credit"] == 5

    with ledger_pool_held(tight), ledger_waits(ledger_pool(tight.ledger)) as waits:
        response, waited = timed_post(tight_client, "/api/v1/vto/jobs", json=job_body(items), headers=headers)
    assert_database_unavailable(response, waited)
    assert waits == {"requests_num": 1, "requests_errors": 1}  # asked once, not eventsourcing's ten tries
    assert written(tight, pg_url, caller) == before

    # Nothing half-written: the same order, retried with its key, goes through once.
    retried = tight_client.post("/api/v1/vto/jobs", json=job_body(items), headers=headers)
    assert retried.status_code == 202, retried.text
    position, jobs, points = written(tight, pg_url, caller)
    assert jobs == 1 and points["credit"] == 4 and position > before[0]


def test_exhausted_ledger_pool_answers_503_to_a_grant_and_grants_nothing(
    tight_client: TestClient, tight: Any, pg_url: str
) -> None:
    admin, target = make_user(tight, admin=True), make_user(tight)
    body = {"email": target.user.email, "credits": 7, "tickets": {"lookbook": 1}, "reason": "launch"}
    before = written(tight, pg_url, target)

    with ledger_pool_held(tight), ledger_waits(ledger_pool(tight.ledger)) as waits:
        response, waited = timed_post(tight_client, "/api/v1/admin/grants", json=body, headers=admin.headers)
    assert_database_unavailable(response, waited)
    assert waits == {"requests_num": 1, "requests_errors": 1}
    assert written(tight, pg_url, target) == before

    granted = tight_client.post("/api/v1/admin/grants", json=body, headers=admin.headers)
    assert granted.status_code == 201, granted.text
    assert granted.json()["points"]["credit"] == 7


def test_exhausted_catalog_pool_answers_503_and_writes_no_job(
    tight_client: TestClient, tight: Any, pg_url: str
) -> None:
    caller = make_user(tight)
    tight.ledger.grant_credits(caller.id, 5, "test")
    items = catalog(tight_client, caller)
    headers = {**caller.headers, "Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    before = written(tight, pg_url, caller)

    with catalog_pool_held(tight), catalog_waits(tight) as waits:
        response, waited = timed_post(tight_client, "/api/v1/vto/jobs", json=job_body(items), headers=headers)
        assert waits == [POOL_TIMEOUT_S]  # one wait, for the pool timeout
        collection = tight_client.post("/api/v1/collections", json={"name": "AW27"}, headers=caller.headers)
    assert_database_unavailable(response, waited)
    assert collection.status_code == 503, collection.text
    assert waits == [POOL_TIMEOUT_S] * 2
    assert written(tight, pg_url, caller) == before
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT count(*) FROM collections WHERE name = 'AW27'").fetchone()
    assert row == (0,)


@pytest.fixture
def refused_url(pg_url: str) -> Iterator[str]:
    """The test database through a role PostgreSQL admits no connection of: every connect
    fails with SQLSTATE 53300 (too_many_connections), as ``too many clients already`` does."""
    role = f"vto_refused_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
    try:
        yield make_conninfo(pg_url, user=role, password="")
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")


def test_postgres_refusing_connections_is_a_503_not_a_500(
    tight_client: TestClient, tight: Any, tight_settings: Settings, pg_url: str, refused_url: str
) -> None:
    with pytest.raises(psycopg.OperationalError, match="too many connections"):
        psycopg.connect(refused_url).close()
    caller, admin = make_user(tight), make_user(tight, admin=True)
    before = written(tight, pg_url, caller)

    # The ledger's pool lost its connection and PostgreSQL refuses new ones: its commands
    # wait the pool timeout, then 503.
    refusing_ledger = postgres_ledger(tight_settings, pg_url)
    pool = ledger_pool(refusing_ledger)
    pool.kwargs["user"] = conninfo(refused_url)["user"]  # type: ignore[index]
    dropped = pool.getconn()
    dropped.close()
    pool.putconn(dropped)
    refusing = type(tight)(**{**tight.__dict__, "ledger": refusing_ledger})
    app = tight_client.app
    app.dependency_overrides[get_services] = lambda: refusing  # type: ignore[attr-defined]
    try:
        body = {"email": caller.user.email, "credits": 3, "reason": "refused"}
        with ledger_waits(pool) as waits:
            response, waited = timed_post(
                tight_client, "/api/v1/admin/grants", json=body, headers=admin.headers
            )
    finally:
        app.dependency_overrides.clear()  # type: ignore[attr-defined]
        refusing_ledger.close()
    assert_database_unavailable(response, waited)
    assert waits == {"requests_num": 1, "requests_errors": 1}
    assert pool.get_stats().get("connections_errors", 0) >= 1  # refused, as the role has no slot
    assert written(tight, pg_url, caller) == before

    # The catalog engine's connect is refused outright (FATAL at connect): 503 at once.
    refusing_engine = make_engine(refused_url, 1, 0, POOL_TIMEOUT_S)
    refusing = type(tight)(
        **{**tight.__dict__, "engine": refusing_engine, "sessions": make_sessionmaker(refusing_engine)}
    )
    app.dependency_overrides[get_services] = lambda: refusing  # type: ignore[attr-defined]
    try:
        points = tight_client.get("/api/v1/points", headers=caller.headers)
        collection = tight_client.post("/api/v1/collections", json={"name": "AW27"}, headers=caller.headers)
    finally:
        app.dependency_overrides.clear()  # type: ignore[attr-defined]
        refusing_engine.dispose()
    for refused in (points, collection):
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["code"] == "database_unavailable"
    assert written(tight, pg_url, caller) == before


def test_the_openapi_documents_the_503_of_an_exhausted_pool() -> None:
    schema = create_app().openapi()
    jobs = schema["paths"]["/api/v1/vto/jobs"]["post"]["responses"]["503"]
    assert "database_unavailable" in jobs["description"]
    assert "Retry-After" in jobs["headers"]
    assert jobs["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    ready = schema["paths"]["/readyz"]["get"]["responses"]["503"]["description"]
    assert "not_ready" in ready and "database_unavailable" in ready
    assert "503" not in schema["paths"]["/healthz"]["get"]["responses"]


def test_an_order_waiting_on_the_ledger_holds_no_catalog_connection(
    tight_client: TestClient, tight: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two orders held in the ledger's append (the catalog pool has two connections): a third
    request still gets a catalog connection at once, and both orders then go through."""
    caller = make_user(tight)
    tight.ledger.grant_credits(caller.id, 5, "test")
    items = catalog(tight_client, caller)
    writer = tight.ledger.store.writer
    append, release, holding = writer._append, threading.Event(), threading.Event()

    def held(events: Any) -> Any:
        holding.set()
        assert release.wait(timeout=60)
        return append(events)

    monkeypatch.setattr(writer, "_append", held)
    orders: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda: orders.append(
                tight_client.post("/api/v1/vto/jobs", json=job_body(items), headers=caller.headers)
            )
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    assert holding.wait(timeout=30)
    wait_until(lambda: len(writer._queue) == 1, what="the second order queued behind the first")
    try:
        me = tight_client.get("/api/v1/users/me", headers=caller.headers)
        assert me.status_code == 200, me.text
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=60)
    assert [o.status_code for o in orders] == [202, 202], [o.text for o in orders]
