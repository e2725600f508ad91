"""The baseline of benchmarks/jobs_vs_prd.py (benchmarks/prd_flow/app.py) follows the PRD's
rules on a real PostgreSQL: the deduction order subscription → ticket → credits, and its
``SELECT ... FOR UPDATE`` transaction never charges twice under concurrent requests; its HTTP
routes answer as the benchmark expects. wrk is not needed."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from benchmarks.harness import Seeded
from benchmarks.jobs_vs_prd import (
    OUR_NEWEST,
    PRD_NEWEST,
    Bench,
    Cell,
    Figures,
    Side,
    combined,
    interleaved,
    write_items,
)
from benchmarks.prd_flow import app as prd
from command_api.auth import tokens
from infra.database import sqlalchemy_url

SECRET = "test-" + "s" * 40


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = prd.make_engine(sqlalchemy_url(pg_url))
    prd.create_tables(engine)
    yield engine
    engine.dispose()


def add_user(engine: sa.Engine, **balances: object) -> tuple[uuid.UUID, uuid.UUID]:
    user_id, project_id = uuid.uuid4(), uuid.uuid4()
    row = {
        "user_id": user_id,
        "used_today": 0,
        "lookbook_tickets": 0,
        "video_tickets": 0,
        "credit": 0,
        **balances,
    }
    with engine.begin() as conn:
        conn.execute(sa.insert(prd.projects).values(id=project_id, owner_id=user_id, name="p"))
        conn.execute(sa.insert(prd.entitlements).values(row))
    return user_id, project_id


def body(project_id: uuid.UUID, kind: str = "image") -> prd.JobIn:
    return prd.JobIn(
        project_id=project_id, kind=kind, product_ids=[uuid.uuid4()], model_asset_id=uuid.uuid4()
    )


def order(engine: sa.Engine, user_id: uuid.UUID, project_id: uuid.UUID, kind: str) -> str:
    with engine.begin() as conn:
        return str(prd.create_job(conn, user_id, body(project_id, kind), datetime.now(UTC))["charge_source"])


def test_deduction_order_subscription_then_ticket_then_credit(engine: sa.Engine) -> None:
    end = datetime.now(UTC) + timedelta(days=30)
    user, project = add_user(
        engine,
        subscription_plan="basic",
        subscription_end=end,
        daily_quota=1,
        lookbook_tickets=1,
        video_tickets=1,
        credit=6,
    )
    kinds = ["image", "image", "image", "video", "video"]
    sources = [order(engine, user, project, kind) for kind in kinds]
    # a LookBook ticket pays only for an image, a Video ticket only for a video
    assert sources == ["subscription", "ticket:lookbook", "credit", "ticket:video", "credit"]
    with pytest.raises(prd.InsufficientEntitlement):
        order(engine, user, project, "image")
    with engine.connect() as conn:
        row = conn.execute(sa.select(prd.entitlements)).mappings().one()
        usage = conn.execute(sa.select(prd.point_usage.c.source, prd.point_usage.c.amount)).all()
    assert (row["used_today"], row["lookbook_tickets"], row["video_tickets"], row["credit"]) == (1, 0, 0, 0)
    assert sorted(usage) == sorted(
        [("subscription", 0), ("ticket:lookbook", 1), ("credit", 1), ("ticket:video", 1), ("credit", 5)]
    )


def test_concurrent_requests_of_one_user_never_charge_twice(engine: sa.Engine) -> None:
    user, project = add_user(engine, credit=40)
    outcomes: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(6):
            try:
                outcome = order(engine, user, project, "image")
            except prd.InsufficientEntitlement:
                outcome = "refused"
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("credit") == 40 and outcomes.count("refused") == 32
    with engine.connect() as conn:
        credit = conn.execute(sa.select(prd.entitlements.c.credit)).scalar_one()
        jobs = conn.execute(sa.select(sa.func.count()).select_from(prd.vto_job)).scalar_one()
        lines = conn.execute(
            sa.select(prd.point_usage.c.job_id, sa.func.count()).group_by(prd.point_usage.c.job_id)
        ).all()
    assert credit == 0 and jobs == 40
    assert len(lines) == 40 and all(n == 1 for _, n in lines)


def test_http_routes_of_the_baseline(engine: sa.Engine) -> None:
    user, project = add_user(engine, credit=3)
    other, _ = add_user(engine, credit=3)
    token, _ = tokens.issue(SECRET, user, 0, "access", timedelta(minutes=5))
    refresh, _ = tokens.issue(SECRET, user, 0, "refresh", timedelta(minutes=5))
    headers = {"Authorization": f"Bearer {token}"}
    payload = body(project).model_dump(mode="json")
    with TestClient(prd.create_app(engine.url.render_as_string(hide_password=False), SECRET)) as client:
        created = client.post("/api/v1/vto/jobs", json=payload, headers=headers)
        assert created.status_code == 202, created.text
        assert created.json()["charge"] == {"source": "credit", "amount": 1}
        job = client.get(f"/api/v1/vto/jobs/{created.json()['id']}", headers=headers)
        assert job.status_code == 200 and job.json()["status"] == "queued"
        assert client.get("/api/v1/points", headers=headers).json()["credit"] == 2
        assert client.get(f"/api/v1/vto/projects/{project}/results", headers=headers).json()["items"] == []
        assert client.post("/api/v1/vto/jobs", json=payload).status_code == 401
        assert client.get("/api/v1/points", headers={"Authorization": f"Bearer {refresh}"}).status_code == 401
        stranger = tokens.issue(SECRET, other, 0, "access", timedelta(minutes=5))[0]
        foreign = client.post(
            "/api/v1/vto/jobs", json=payload, headers={"Authorization": f"Bearer {stranger}"}
        )
        assert foreign.status_code == 404


def test_wrk_data_file_and_newest_job_queries(engine: sa.Engine, tmp_path: Path) -> None:
    user, project = add_user(engine, credit=3)
    order(engine, user, project, "image")
    with engine.connect() as conn:
        newest = dict(conn.exec_driver_sql(PRD_NEWEST).all())
        conn.exec_driver_sql(OUR_NEWEST).all()  # ours' read model is in the same database
    seeded = [Seeded("tok", {"project_id": str(project), "kind": "image"}, user)]
    side = Side("prd", "http://x", dict, job_ids=newest)
    out = tmp_path / "items.lua"
    write_items(out, Cell("job-16", "job", 16), side, seeded)
    text = out.read_text()
    assert f'path = "/api/v1/vto/jobs/{newest[user]}"' in text and "body = nil" in text
    write_items(out, Cell("post-1", "post", 1), side, seeded)
    assert 'method = "POST"' in out.read_text() and '\\"kind\\":\\"image\\"' in out.read_text()


def figures(requests: int, p50: float, p99: float, non2xx: int = 0, first: int = 0) -> Figures:
    return Figures(
        requests, 2.0, p50, p99, non2xx, 0, first, requests / 1000, cpu_parts={"api": requests / 1000}
    )


def test_a_sides_rounds_combine_into_one_figure() -> None:
    one = combined([figures(100, 2.0, 9.0), figures(300, 4.0, 7.0, non2xx=2, first=503)])
    assert (one.requests, one.seconds, one.rps) == (400, 4.0, 100.0)
    assert one.p50_ms == 3.5  # weighted by requests
    assert one.p99_ms == 9.0  # the highest
    assert (one.non2xx, one.first_non2xx) == (2, 503)
    assert one.cpu_parts == {"api": 0.4} and one.cpu_s == 0.4


class Deployment:
    """A stand-in for ``Bench``: records what the cell asked of it."""

    def __init__(self, workers: int, calls: list[str]) -> None:
        self.workers, self.calls = workers, calls
        self.sides = [Side(name, "http://127.0.0.1:1", dict) for name in ("ours", "prd")]

    def begin(self, cell: Cell) -> None:
        self.calls.append(f"begin N={self.workers}")

    def load(self, cell: Cell, side: Side, round_: int, urls: list[str]) -> None:
        self.calls.append(f"N={self.workers} {side.name} {round_ + 1}")

    def end(self, cell: Cell) -> None:
        self.calls.append(f"end N={self.workers}")


def test_a_cell_loads_every_deployment_in_turn_then_in_reverse() -> None:
    """Every side of every N is loaded in each round, the order reversed round by round, so a
    drifting machine favours no side and no N; each deployment begins before its first load
    and ends after its last."""
    calls: list[str] = []
    benches = [cast(Bench, Deployment(n, calls)) for n in (1, 2)]
    interleaved(Cell("post-1", "post", 1), benches, rounds=3, urls=[])
    assert calls == [
        "begin N=1",
        "begin N=2",
        *("N=1 ours 1", "N=1 prd 1", "N=2 ours 1", "N=2 prd 1"),
        *("N=2 prd 2", "N=2 ours 2", "N=1 prd 2", "N=1 ours 2"),
        *("N=1 ours 3", "N=1 prd 3", "N=2 ours 3", "N=2 prd 3"),
        "end N=1",
        "end N=2",
    ]
