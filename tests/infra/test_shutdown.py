"""`vto serve` under faults, as a real process on the embedded defaults (embedded PostgreSQL,
in-process queue): SIGTERM and SIGINT stop it and its PostgreSQL; a power loss (SIGKILL of
the process and of PostgreSQL) recovers on the next start with every job ending and the audit
green; PostgreSQL restarting under it answers 503 with Retry-After, then everything recovers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.serve_process import Caller, Serve, serve_in_tmp, wait_until
from tests.test_vto import catalog, job_body

pytestmark = pytest.mark.slow

ADMIN = "admin@shutdown.example.com"
PASSWORD = "correct horse battery"
TERMINAL = {"succeeded", "failed", "canceled"}


@pytest.fixture
def serve() -> Iterator[Serve]:
    with serve_in_tmp() as server:
        yield server


def runs_postgres(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a live PostgreSQL process of ``pgdata``."""
    try:
        process = psutil.Process(pid)
        return (
            process.status() != psutil.STATUS_ZOMBIE
            and process.name() == "postgres"
            and str(pgdata.resolve()) in process.cmdline()
        )
    except psutil.NoSuchProcess:
        return False


def sign_in(client: httpx.Client, email: str) -> Caller:
    body = {"email": email, "password": PASSWORD, "name": "Seller", "language": "en"}
    assert client.post("/api/v1/auth/register", json=body).status_code == 201
    login = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return Caller({"Authorization": f"Bearer {login.json()['access_token']}"})


def seller_with_credits(serve: Serve, client: httpx.Client, credits: int) -> tuple[Caller, dict[str, str]]:
    admin = sign_in(client, ADMIN)
    made = serve.cli("admin", "add", "--force", ADMIN)  # the operator's command, beside the running server
    assert made.returncode == 0, made.stdout + made.stderr
    seller = sign_in(client, "seller@shutdown.example.com")
    me = client.get("/api/v1/users/me", headers=seller.headers).json()
    grant = {"user_id": me["id"], "credits": credits, "reason": "test"}
    assert client.post("/api/v1/admin/grants", json=grant, headers=admin.headers).status_code == 201
    return seller, catalog(client, seller)


def stop_with(serve: Serve, signum: int) -> None:
    assert serve.process is not None
    serve.process.send_signal(signum)
    try:
        returncode = serve.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"vto serve still running 60 s after {signum}: {serve.output()}") from None
    assert returncode == 0, serve.output()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_serve_and_its_embedded_postgres(serve: Serve, signum: int) -> None:
    serve.start()
    postgres = serve.postgres_pid()
    assert postgres is not None
    stop_with(serve, signum)
    assert serve.postgres_pid() is None
    assert not runs_postgres(postgres, serve.data_dir / "pgdata")
    assert not (serve.data_dir / "pgdata" / "postmaster.pid").exists()


def test_a_power_loss_recovers_with_every_job_ending_and_the_audit_green(serve: Serve) -> None:
    serve.start()
    with serve.client() as client:
        seller, items = seller_with_credits(serve, client, credits=8)
        jobs = []
        for i in range(6):
            created = client.post("/api/v1/vto/jobs", json=job_body(items, seed=i), headers=seller.headers)
            assert created.status_code == 202, created.text
            jobs.append(created.json()["id"])
    # Power loss: the process and PostgreSQL (every process of it) die at once.
    postgres = serve.postgres_pid()
    assert postgres is not None and serve.process is not None
    victims = [psutil.Process(postgres), *psutil.Process(postgres).children(recursive=True)]
    serve.process.send_signal(signal.SIGKILL)
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.kill()
    serve.process.wait(timeout=30)
    psutil.wait_procs(victims, timeout=30)

    serve.start()
    with serve.client() as client:

        def all_finished() -> bool:
            statuses = [
                client.get(f"/api/v1/vto/jobs/{j}", headers=seller.headers).json()["status"] for j in jobs
            ]
            return all(s in TERMINAL for s in statuses)

        wait_until(all_finished, 180, "every job accepted before the power loss to end")
        points = client.get("/api/v1/points", headers=seller.headers).json()
        assert points["pending_reservations"] == 0
    audit = serve.cli("ledger", "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    # The killed process's claim on the embedded server is forgotten: a clean stop stops it.
    stop_with(serve, signal.SIGTERM)
    assert serve.postgres_pid() is None


def pg_ctl(pgdata: Path, *args: str) -> None:
    from pgserver._commands import pg_ctl as run_pg_ctl  # type: ignore[attr-defined]

    user = "pgserver" if os.geteuid() == 0 else None
    run_pg_ctl(list(args), pgdata=pgdata, user=user, timeout=60)


def test_postgres_restarting_under_serve_answers_503_with_retry_after_then_recovers(serve: Serve) -> None:
    from pgserver.utils import PostmasterInfo  # type: ignore[import-untyped]

    serve.start()
    pgdata = (serve.data_dir / "pgdata").resolve()
    info = PostmasterInfo.read_from_pgdata(pgdata)
    assert info is not None
    with serve.client() as client:
        seller, items = seller_with_credits(serve, client, credits=5)
        before = client.post("/api/v1/vto/jobs", json=job_body(items, seed=1), headers=seller.headers)
        assert before.status_code == 202, before.text

        pg_ctl(pgdata, "-w", "-m", "fast", "stop")
        try:
            for method, path, body in [
                ("GET", "/api/v1/points", None),
                ("GET", f"/api/v1/vto/jobs/{before.json()['id']}", None),
                ("POST", "/api/v1/vto/jobs", job_body(items, seed=2)),
            ]:
                response = client.request(method, path, json=body, headers=seller.headers)
                assert response.status_code == 503, (path, response.status_code, response.text)
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.json()["code"] == "database_unavailable"
                assert int(response.headers["Retry-After"]) >= 1
            assert client.get("/readyz").status_code == 503
        finally:
            options = ["-o", '-h ""', "-o", f"-k {info.socket_dir}"]
            pg_ctl(pgdata, "-w", *options, "-l", str(pgdata / "log"), "start")

        wait_until(
            lambda: client.get("/api/v1/points", headers=seller.headers).status_code == 200,
            60,
            "the API to reach the restarted database",
        )
        after = client.post("/api/v1/vto/jobs", json=job_body(items, seed=3), headers=seller.headers)
        assert after.status_code == 202, after.text
        for job in (before.json()["id"], after.json()["id"]):
            wait_until(
                lambda job=job: (
                    client.get(f"/api/v1/vto/jobs/{job}", headers=seller.headers).json()["status"] in TERMINAL
                ),
                120,
                f"job {job} to end",
            )
        wait_until(lambda: client.get("/readyz").status_code == 200, 60, "/readyz to turn green again")
    audit = serve.cli("ledger", "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    stop_with(serve, signal.SIGTERM)
    assert serve.postgres_pid() is None  # the restarted server is stopped too
