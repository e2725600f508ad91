"""Job creation scaled out: two ``vto api`` processes on one database, with the default pool
sizes, take interleaved orders of the same users at once, a hot user included: every order is
accepted (no 503: no request holds a catalog connection while it waits on the ledger, and a
collision is decided again under the table lock, never given up), every accepted job is
charged once, no stream has a gap, and the audit passes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import UUID

import httpx
import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

from benchmarks.harness import SECRET, Processes, Seeded, seed, wait_http
from infra.kafka.local import free_port
from ledger.account import Account
from projections.events import ledger_mapper

REPO = Path(__file__).resolve().parent.parent
ORDERS_PER_USER = 32


@pytest.fixture
def deployment(pg_url: str, tmp_path: Path) -> Iterator[tuple[list[str], dict[str, str]]]:
    """Two API processes (their base URLs) and a projector on ``pg_url``; the environment."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "VTO_DATABASE_URL": pg_url,
        "VTO_JWT_SECRET": SECRET,
        "VTO_DATA_DIR": str(tmp_path / "data"),
    }
    processes = Processes(env, tmp_path / "logs")
    ports = [free_port(), free_port()]
    try:
        for port in ports:
            processes.start("api", "--port", str(port))
        processes.start("projector")
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        for base in bases:
            wait_http(f"{base}/healthz", 120)
        yield bases, env
    finally:
        processes.stop()


def order(base: str, who: Seeded) -> int:
    headers = {"Authorization": f"Bearer {who.token}"}
    return httpx.post(f"{base}/api/v1/vto/jobs", json=who.body, headers=headers, timeout=60).status_code


def reservations(pg_url: str) -> dict[UUID, list[tuple[int, UUID | None]]]:
    """Each stream's versions, with the job id of each reservation among them."""
    mapper = ledger_mapper()
    streams: dict[UUID, list[tuple[int, UUID | None]]] = defaultdict(list)
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT originator_id, originator_version, topic, state FROM ledger_events "
            "ORDER BY originator_id, originator_version"
        ).fetchall()
    for stream, version, topic, state in rows:
        job = None
        if topic.endswith("EntitlementReserved"):
            event = mapper.to_domain_event(StoredEvent(stream, version, topic, state))
            assert isinstance(event, Account.EntitlementReserved)
            job = event.job_id
        streams[stream].append((version, job))
    return streams


@pytest.mark.slow
def test_two_api_processes_take_a_busy_sellers_orders_together(
    deployment: tuple[list[str], dict[str, str]], pg_url: str, tmp_path: Path
) -> None:
    bases, env = deployment
    users = seed(pg_url, tmp_path / "data", 4, credits=10 * ORDERS_PER_USER, prefix="scale")
    hot, others = users[0], users[1:]
    calls = [(bases[i % 2], hot) for i in range(2 * ORDERS_PER_USER)]  # the hot user: 64 at once
    calls += [(bases[i % 2], who) for who in others for i in range(ORDERS_PER_USER // 2)]
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        statuses = list(pool.map(lambda call: order(*call), calls))
    assert Counter(statuses) == {202: len(calls)}

    wanted = Counter(who.user_id for _, who in calls)
    streams = reservations(pg_url)
    for who in users:
        stream = streams[who.user_id]
        assert [v for v, _ in stream] == list(range(1, len(stream) + 1))  # no gap
        jobs = [job for _, job in stream if job is not None]
        assert len(jobs) == len(set(jobs)) == wanted[who.user_id]  # each accepted job charged once

    audit = subprocess.run(
        [sys.executable, "-c", "from infra.cli import main; main()", "ledger", "audit", "--wait", "120"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
