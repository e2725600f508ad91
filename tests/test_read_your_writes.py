"""Read-your-writes and concurrent commands across real processes: two ``vto api`` processes
and ``vto projector`` on one PostgreSQL database (each a subprocess, as deployed).

``POST /vto/jobs`` answers from the ledger's decision without waiting for the projections; a
read of the caller's balance or jobs, on either API process, waits until the read models
include the caller's newest ledger event. Two API processes deciding for one user at once are
kept apart by the event stream's version: no double charge, no overdraft, one job per
Idempotency-Key, nothing half-written (the ledger audit agrees with the read models)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.chaos import Deployment, job_histories
from ledger.effects import Charge
from tests.conftest import fresh_database
from tests.infra.test_shutdown import Caller, sign_in, wait_until
from tests.test_vto import catalog, job_body

pytestmark = pytest.mark.slow

SECRET = "read-your-writes-" + "r" * 32
ADMIN = "admin@ryw.example.com"
COST = 3  # credits an image costs here (not 1: the balance must drop by the price, not by one job)
CHARGE = {"source": "credit", "amount": COST}
NO_TICKETS = {"lookbook": 0, "video": 0}
_emails = itertools.count()


@dataclass
class Cluster:
    """The processes of the deployment, clients of both APIs and the admin's headers."""

    deployment: Deployment
    url: str
    a: httpx.Client
    b: httpx.Client
    admin: Caller

    @property
    def apis(self) -> tuple[httpx.Client, httpx.Client]:
        return self.a, self.b

    def seller(self, credits: int) -> tuple[Caller, dict[str, Any], str]:
        """A new seller with a project, a product, a model photo and ``credits`` credits
        (granted by the admin on API B); their headers, items and user id."""
        seller = sign_in(self.a, f"seller{next(_emails)}@ryw.example.com")
        user_id = self.a.get("/api/v1/users/me", headers=seller.headers).json()["id"]
        items = catalog(self.a, seller)  # type: ignore[arg-type]  # it reads .headers only
        grant = {"user_id": user_id, "credits": credits, "reason": "test"}
        granted = self.b.post("/api/v1/admin/grants", json=grant, headers=self.admin.headers)
        assert granted.status_code == 201, granted.text
        for api in self.apis:  # the projector is running (what every later read relies on)

            def shown(api: httpx.Client = api) -> bool:
                return bool(points(api, seller)["credit"] == credits)

            wait_until(shown, 60, f"the grant to show on {api.base_url} (is `vto projector` running?)")
        return seller, items, user_id

    def audit(self) -> None:
        audited = self.deployment.cli("ledger", "audit", "--wait", "30")
        assert audited.returncode == 0, audited.stdout + audited.stderr

    def check_alive(self) -> None:
        for name, process in self.deployment.processes.items():
            if process.poll() is not None:
                log = self.deployment.logs / f"{name}-{self.deployment.starts[name]}.log"
                tail = log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"{name} exited with {process.returncode}: {tail}")


def points(api: httpx.Client, caller: Caller) -> dict[str, Any]:
    response = api.get("/api/v1/points", headers=caller.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    lots = body.pop("lots")  # never expiring here: the credit lots hold the whole balance
    assert sum(lot["left"] for lot in lots["credit"]) == body["credit"], lots
    assert set(body.pop("expiring_within_7_days").values()) == {0}
    return body


def jobs_of(api: httpx.Client, caller: Caller) -> list[dict[str, Any]]:
    response = api.get("/api/v1/vto/jobs?limit=100", headers=caller.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def ledger_jobs(url: str, user_id: str) -> dict[uuid.UUID, list[Charge]]:
    """The user's jobs as the ledger's events say: each job's reservations."""
    return {
        job_id: history.reserved
        for job_id, history in job_histories(url).items()
        if str(history.user_id) == user_id
    }


@pytest.fixture(scope="module")
def cluster(pg_server_url: str) -> Iterator[Cluster]:
    """`vto api` twice and `vto projector` on a fresh database; no relay or worker (jobs stay
    queued, their reservations pending). Stopped with SIGTERM at the end: each exits 0."""
    root = Path(tempfile.mkdtemp(prefix="vto-test-ryw-"))
    with fresh_database(pg_server_url) as url:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VTO_")},
            "VTO_DATABASE_URL": url,
            "VTO_DATA_DIR": str(root / "data"),  # shared: files uploaded on A are read on B
            "VTO_JWT_SECRET": SECRET,
            "VTO_CREDIT_COSTS": json.dumps({"image": COST, "video": 5}),
        }
        deployment = Deployment(root, env, apis=2, workers=0)
        try:
            for name in ("projector", *deployment.api_names):
                deployment.start(name)
            for name in deployment.api_names:
                deployment.wait_api(name)
            a, b = (
                httpx.Client(base_url=f"http://127.0.0.1:{deployment.ports[n]}", timeout=60)
                for n in ("api-0", "api-1")
            )
            with a, b:
                admin = sign_in(a, ADMIN)
                made = deployment.cli("admin", "add", "--force", ADMIN)
                assert made.returncode == 0, made.stdout + made.stderr
                yield Cluster(deployment, url, a, b, admin)
            statuses = deployment.stop_all()
            assert statuses == dict.fromkeys(deployment.processes, 0), f"logs in {deployment.logs}"
            shutil.rmtree(root, ignore_errors=True)  # kept (with the logs) when a process failed
        finally:
            deployment.kill_all()


def test_a_job_ordered_on_one_api_process_is_read_at_once_on_the_other(cluster: Cluster) -> None:
    rounds = 30
    credits = COST * rounds + 2
    seller, items, user_id = cluster.seller(credits)
    ordered: list[str] = []
    for i in range(rounds):
        writer, reader = (cluster.a, cluster.b) if i % 2 == 0 else (cluster.b, cluster.a)
        created = writer.post("/api/v1/vto/jobs", json=job_body(items, seed=i), headers=seller.headers)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        assert created.json()["charge"] == CHARGE
        ordered.append(job_id)
        balance = credits - COST * (i + 1)
        for api in (reader, writer):  # at once: no wait, no retry
            job = api.get(f"/api/v1/vto/jobs/{job_id}", headers=seller.headers)
            assert job.status_code == 200, (i, api.base_url, job.text)
            assert job.json()["charge"] == CHARGE
            assert job.json()["project_id"] == items["project_id"]
            assert points(api, seller) == {
                "credit": balance,
                "tickets": NO_TICKETS,
                "subscription": None,
                "pending_reservations": i + 1,
            }, (i, api.base_url)
        usage = reader.get("/api/v1/points/usage?limit=1", headers=seller.headers)
        assert usage.status_code == 200, usage.text
        [line] = usage.json()["items"]
        assert (line["job_id"], line["type"], line["source"]) == (job_id, "reservation", "credit")
        assert (line["amount"], line["balance_after"]) == (-COST, balance)
        assert [j["id"] for j in jobs_of(reader, seller)] == ordered[::-1]
    assert ledger_jobs(cluster.url, user_id) == {uuid.UUID(j): [Charge("credit", COST)] for j in ordered}
    cluster.check_alive()


def order_at_once(
    cluster: Cluster, caller: Caller, bodies: list[dict[str, Any]], headers: dict[str, str]
) -> list[httpx.Response]:
    """POST /vto/jobs with each body, all at once (a barrier), alternately on API A and B."""
    barrier = threading.Barrier(len(bodies))

    def order(index: int) -> httpx.Response:
        api = cluster.apis[index % 2]
        barrier.wait(timeout=60)
        return api.post("/api/v1/vto/jobs", json=bodies[index], headers={**caller.headers, **headers})

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(order, range(len(bodies))))


def test_two_api_processes_racing_on_one_user_charge_each_job_once_and_never_overdraw(
    cluster: Cluster,
) -> None:
    requests, affordable = 40, 7
    seller, items, user_id = cluster.seller(COST * affordable)
    bodies = [job_body(items, seed=i) for i in range(requests)]
    responses = order_at_once(cluster, seller, bodies, {})

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] * affordable + [402] * (requests - affordable), [r.text for r in responses]
    refused = [r for r in responses if r.status_code == 402]
    assert {r.json()["code"] for r in refused} == {"insufficient_entitlement"}
    accepted = {r.json()["id"] for r in responses if r.status_code == 202}
    for api in cluster.apis:
        assert points(api, seller) == {
            "credit": 0,
            "tickets": NO_TICKETS,
            "subscription": None,
            "pending_reservations": affordable,
        }
        assert {j["id"] for j in jobs_of(api, seller)} == accepted
        assert all(j["charge"] == CHARGE for j in jobs_of(api, seller))
    in_ledger = ledger_jobs(cluster.url, user_id)
    assert {str(j) for j in in_ledger} == accepted
    assert all(charges == [Charge("credit", COST)] for charges in in_ledger.values()), in_ledger
    cluster.audit()
    cluster.check_alive()


def test_one_idempotency_key_sent_at_once_to_both_api_processes_makes_one_job_charged_once(
    cluster: Cluster,
) -> None:
    requests, credits = 20, COST * 10
    seller, items, user_id = cluster.seller(credits)
    body = job_body(items, seed=42)
    responses = order_at_once(cluster, seller, [body] * requests, {"Idempotency-Key": "order-ryw-1"})

    assert [r.status_code for r in responses] == [202] * requests, [r.text for r in responses]
    [job_id] = {r.json()["id"] for r in responses}
    assert all(r.json()["charge"] == CHARGE for r in responses)
    for api in cluster.apis:
        assert points(api, seller)["credit"] == credits - COST
        assert points(api, seller)["pending_reservations"] == 1
        assert [j["id"] for j in jobs_of(api, seller)] == [job_id]
    assert ledger_jobs(cluster.url, user_id) == {uuid.UUID(job_id): [Charge("credit", COST)]}
    cluster.audit()
    cluster.check_alive()
