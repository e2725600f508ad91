"""A chaos run against the multi-process deployment, then a check that nothing was lost.

    uv run python benchmarks/chaos.py [--requests 10000] [--users 50] [--threads 12] [--seed 1]

What it starts (everything in a temporary directory, stopped at the end):

- PostgreSQL 16 from pgserver's binaries, which it controls (so it can restart it);
- the local Kafka 0.9 broker (``infra.kafka.local``; needs java, and npm once);
- the deployment's processes, each a ``vto`` subprocess with the same ``VTO_`` environment:
  ``vto api`` twice (two ports; the load goes to either, and to the other when one is down),
  ``vto projector``, ``vto relay``, ``vto worker`` twice, ``vto ingestor``, ``vto sweeper``;
  the offline generator fails 20% of its attempts (``VTO_GENERATOR_FAILURE_RATE``) and
  ``VTO_JOB_TIMEOUT_S`` is short, so the sweeper expires jobs too.

What it does: registers users (and an admin) through the API, gives each a project with a
garment and a model photo, grants them points, then sends randomized requests from a thread
pool (httpx): job creations with and without ``Idempotency-Key``, identical retries of keyed
creations, a key reused with another body, cancels, reads, admin refunds and grants, and now
and then a poison job (its garment's stored image made unreadable, or unreadable storage, behind
the API's back: it can never succeed, and must end failed and refunded). Meanwhile
it publishes copies of result messages to the results topic (duplicate deliveries) and, at
random points of the load, SIGKILLs a worker, the ingestor, the relay, the projector and an
API process (each restarted), restarts the broker and restarts PostgreSQL.

Then it quiesces (waits, with a deadline, until no job is open, the relay and the projections
are at the head of the log and no consumer group lags) and checks, reading the database:
every accepted job terminal; each job reserved once (no double charge); each failed or
canceled job refunded exactly once, to its source, for its amount; usage lines consistent
with the jobs; one job per idempotency key; ``vto ledger audit`` exit 0; nothing in flight;
the processes stop cleanly on SIGTERM; the read models equal a fresh rebuild. It prints what it
did and what it found, and exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from PIL import Image, ImageDraw

from infra.kafka import local
from infra.kafka.client import KafkaQueue
from infra.queue.base import Topics
from ledger.effects import Charge, effect
from ledger.status import JobStatus, ReservationStatus
from projections.events import EVENTS_TABLE, decode, ledger_mapper, select_after

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = "chaos-" + "c" * 40
ADMIN_EMAIL = "chaos-admin@example.com"
PASSWORD = "correct horse battery"
TOPIC_PREFIX = "vto"
WORKER_GROUP, INGESTOR_GROUP = "vto-worker", "vto-ingestor"
TERMINAL = {s.value for s in JobStatus if s.finished}
JOB_OPTIONS = {"width": 192, "height": 256, "num_outputs": 1}
READ_MODELS = {  # every read model table, with its key (the rebuild comparison)
    "point_balance": "user_id",
    "point_usage": "position",
    "point_reservation": "job_id",
    "vto_job": "job_id",
    "gallery": "job_id, output_index",
    "project_stats": "project_id",
}
KILLED = ("worker", "ingestor", "relay", "projector", "api")


@dataclass
class Config:
    requests: int = 10_000
    users: int = 50
    threads: int = 12
    rate: float = 25.0  # requests per second (load shaping: the chaos happens during the load)
    seed: int = 1
    failure_rate: float = 0.2
    job_timeout_s: float = 30.0
    kills: int = 1  # SIGKILLs of each kind of process
    broker_restarts: int = 1
    postgres_restarts: int = 1
    postgres_stop_mode: str = "fast"  # pg_ctl's: fast (clients cut off) or immediate (a crash)
    duplicate_rate: float = 0.3  # share of result messages published a second time
    poison_rate: float = 0.01  # share of job creations that order a poison job
    max_open_jobs: int = 24  # load shaping: creations wait while this many jobs are open
    quiesce_timeout_s: float = 600.0
    root: Path | None = None
    keep: bool = False


# --- the admin ---------------------------------------------------------------------------------


def make_admin(deployment: Deployment, email: str) -> None:
    """Give the (registered) account of ``email`` the stored admin role, as an operator does:
    ``vto admin add EMAIL`` on the deployment's database (effective at the next request)."""
    done = deployment.cli("admin", "add", "--force", email)  # the harness registered it
    if done.returncode != 0:
        raise RuntimeError(f"vto admin add {email} failed: {done.stdout}{done.stderr}")


# --- PostgreSQL and Kafka that the run controls ------------------------------------------------


class Postgres:
    """A PostgreSQL server on pgserver's binaries in ``root/pgdata``, stopped and started
    again by ``pg_ctl`` (its socket directory stays the same, so its URL does too)."""

    def __init__(self, root: Path) -> None:
        import pgserver

        self.server = pgserver.get_server(root / "pgdata", cleanup_mode="stop")  # type: ignore[attr-defined]
        self.url = str(self.server.get_uri())
        self.socket_dir = str(self.server.get_postmaster_info().socket_dir)

    def _ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(list(args), pgdata=self.server.pgdata, user=self.server.system_user, timeout=120)

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-w", "-m", mode, "stop")

    def start(self) -> None:
        log = str(self.server.pgdata / "log")
        self._ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", log, "start")

    def configure(self, **parameters: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            for name, value in parameters.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        self.stop()
        self.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        with contextlib.suppress(Exception):
            self.server.cleanup()


# --- the deployment's processes ----------------------------------------------------------------


class Deployment:
    """The ``vto`` processes of a distributed deployment, by name (``api-0``, ``worker-1``,
    ...), started with one environment; killed, restarted and stopped by name."""

    def __init__(self, root: Path, env: dict[str, str], apis: int = 2, workers: int = 2) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.ports = {f"api-{i}": local.free_port() for i in range(apis)}
        self.api_names = list(self.ports)
        self.commands: dict[str, list[str]] = {
            **{name: ["api", "--port", str(port)] for name, port in self.ports.items()},
            "projector": ["projector"],
            "relay": ["relay"],
            **{f"worker-{i}": ["worker"] for i in range(workers)},
            "ingestor": ["ingestor"],
            "sweeper": ["sweeper"],
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: Counter[str] = Counter()
        self.unexpected_exits: list[str] = []
        self.lock = threading.Lock()
        self.down: set[str] = set()  # APIs being restarted: the load avoids them
        self.outages: list[tuple[str, float, float]] = []  # (API, from, to) of each restart

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from infra.cli import main; main()", *args],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, name: str) -> None:
        self.starts[name] += 1
        log = self.logs / f"{name}-{self.starts[name]}.log"
        with log.open("wb") as out:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-c", "from infra.cli import main; main()", *self.commands[name]],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def start_all(self) -> None:
        for name in self.commands:
            self.start(name)
        self.wait_apis()

    def kill(self, name: str) -> None:
        """SIGKILL, then start it again."""
        self._restart(name, signal.SIGKILL)

    def restart(self, name: str) -> None:
        """SIGTERM (a clean stop), then start it again."""
        self._restart(name, signal.SIGTERM)

    def _restart(self, name: str, signum: int) -> None:
        process = self.processes[name]
        began = time.monotonic()
        if name in self.ports:
            self.down.add(name)
        process.send_signal(signum)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.start(name)
        if name in self.ports:
            self.wait_api(name)
            self.outages.append((name, began, time.monotonic()))
            self.down.discard(name)

    def was_down(self, name: str, start: float, end: float) -> bool:
        """Whether the API ``name`` was stopped at some time between ``start`` and ``end``."""
        return name in self.down or any(n == name and a <= end and b >= start for n, a, b in self.outages)

    def wait_api(self, name: str, timeout: float = 180.0) -> None:
        url = f"http://127.0.0.1:{self.ports[name]}/healthz"
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self.processes[name].returncode}; see {self.logs}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer {url} within {timeout} s")
            time.sleep(0.2)  # polling a condition with a deadline

    def wait_apis(self) -> None:
        for name in self.api_names:
            self.wait_api(name)

    def check_alive(self) -> None:
        """Record (and restart) a process that exited without being told to."""
        for name, process in list(self.processes.items()):
            if process.poll() is not None:
                self.unexpected_exits.append(f"{name} exited by itself with {process.returncode}")
                self.start(name)

    def stop_all(self, timeout: float = 60.0) -> dict[str, int | None]:
        """SIGTERM every process; their exit statuses (None: still running at the deadline,
        then killed)."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        statuses: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout
        for name, process in self.processes.items():
            try:
                statuses[name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                statuses[name] = None
                process.kill()
                process.wait()
        return statuses

    def kill_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


# --- inputs ------------------------------------------------------------------------------------


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def model_photo() -> bytes:
    from skimage import data

    return png(Image.fromarray(np.asarray(data.astronaut())).resize((256, 256)))


def garment_photo() -> bytes:
    image = Image.new("RGB", (200, 200), (245, 245, 245))
    outline = [(50, 30), (150, 30), (185, 70), (160, 85), (150, 65), (150, 180), (50, 180), (50, 65)]
    ImageDraw.Draw(image).polygon([*outline, (40, 85), (15, 70)], fill=(30, 160, 60))
    return png(image)


def spoil(files: Path, product_id: str, how: str) -> str:
    """Turn an uploaded product into a poison input, behind the API's back: its stored image
    becomes bytes no decoder reads (``unreadable``: an input error, failed at once) or a
    directory (``storage``: reading it fails every time, a retryable storage error whose
    attempts must stay bounded). Either way the job can never succeed and must end failed and
    refunded. (A garment whose mask's top band is only at the right edge, issue 12's example,
    no longer fails once the fitting clamps its columns.)"""
    stored = [f for f in (files / "products").glob(f"{product_id}.*") if f.suffix != ".type"]
    assert len(stored) == 1, stored
    stored[0].unlink()
    if how == "unreadable":
        stored[0].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    else:
        stored[0].mkdir()
    return how


# --- the load ----------------------------------------------------------------------------------


@dataclass
class Seller:
    email: str
    user_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    project_id: str = ""
    product_id: str = ""
    poison_id: str = ""
    model_id: str = ""
    jobs: list[str] = field(default_factory=list)
    keyed: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)  # key -> (body, job id)

    def body(self, rng: random.Random, poison: bool = False) -> dict[str, Any]:
        return {
            "project_id": self.project_id,
            "kind": "image",
            "product_ids": [self.poison_id if poison else self.product_id],
            "model_asset_id": self.model_id,
            "options": {**JOB_OPTIONS, "seed": rng.randrange(1_000_000)},
        }


class Violations:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.lock = threading.Lock()

    def add(self, what: str) -> None:
        with self.lock:
            self.items.append(what)


class Client:
    """HTTP calls to whichever API process is up, retrying on a connection error (another
    process) and on 503 (after its ``Retry-After``, which must be there)."""

    def __init__(self, deployment: Deployment, stats: Counter[str], violations: Violations) -> None:
        self.deployment = deployment
        self.stats = stats
        self.violations = violations
        self.http = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=64))
        self.lock = threading.Lock()

    def note(self, what: str) -> None:
        with self.lock:
            self.stats[what] += 1

    def call(self, rng: random.Random, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        for _attempt in range(40):
            names = [n for n in self.deployment.api_names if n not in self.deployment.down]
            name = rng.choice(names or self.deployment.api_names)
            url = f"http://127.0.0.1:{self.deployment.ports[name]}/api/v1{path}"
            sent = time.monotonic()
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                error = type(exc).__name__
                if self.deployment.was_down(name, sent, time.monotonic()):
                    self.note(f"connection error ({error}) from an API being restarted, retried")
                else:
                    self.violations.add(f"{error} from {name} while it ran, on {method} {path}")
                time.sleep(rng.uniform(0.05, 0.3))  # back-off before another process
                continue
            if response.status_code == 503:
                retry_after = response.headers.get("Retry-After")
                code = _code(response)
                self.note(f"503 {code}, retried")
                if retry_after is None:
                    self.violations.add(f"503 without Retry-After on {method} {path}: {response.text[:200]}")
                time.sleep(min(2.0, float(retry_after or 1)))  # what Retry-After asks for
                continue
            if response.status_code >= 500:
                self.violations.add(f"{response.status_code} on {method} {path}: {response.text[:300]}")
            return response
        self.note("gave up after 40 attempts")
        return None

    def close(self) -> None:
        self.http.close()


def _code(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(response.json().get("code"))
    return "?"


class Load:
    """The randomized requests, from ``threads`` threads over the sellers."""

    def __init__(self, config: Config, deployment: Deployment, violations: Violations) -> None:
        self.config = config
        self.deployment = deployment
        self.violations = violations
        self.counts: Counter[tuple[str, int | str]] = Counter()  # (kind, status)
        self.stats: Counter[str] = Counter()
        self.client = Client(deployment, self.stats, violations)
        self.sellers: list[Seller] = []
        self.admin: dict[str, str] = {}
        self.accepted: set[str] = set()  # every job id answered 202
        self.poison_jobs: set[str] = set()
        self.open_jobs: set[str] = set()
        self.lock = threading.Lock()
        self.done = 0
        self.progress = threading.Condition()

    # set-up through the API
    def register(self, rng: random.Random, email: str) -> dict[str, str]:
        body = {"email": email, "password": PASSWORD, "name": "Chaos", "language": "en"}
        created = self.client.call(rng, "POST", "/auth/register", json=body)
        assert created is not None and created.status_code == 201, created and created.text
        login = self.client.call(rng, "POST", "/auth/login", json={"email": email, "password": PASSWORD})
        assert login is not None and login.status_code == 200, login and login.text
        return {"Authorization": f"Bearer {login.json()['access_token']}", "_id": created.json()["id"]}

    def set_up(self, rng: random.Random) -> None:
        model, garment = model_photo(), garment_photo()
        files = self.deployment.root / "data" / "files"
        for i in range(self.config.users):
            seller = Seller(f"seller{i}@chaos.example.com")
            headers = self.register(rng, seller.email)
            seller.user_id = headers.pop("_id")
            seller.headers = headers
            call = self.client.call
            collection = call(rng, "POST", "/collections", json={"name": "SS27"}, headers=headers)
            assert collection is not None and collection.status_code == 201, collection and collection.text
            project = call(
                rng,
                "POST",
                "/projects",
                json={"collection_id": collection.json()["id"], "name": "chaos"},
                headers=headers,
            )
            assert project is not None and project.status_code == 201, project and project.text
            seller.project_id = project.json()["id"]
            for attr in ("product_id", "poison_id"):
                product = call(
                    rng,
                    "POST",
                    f"/projects/{seller.project_id}/products",
                    files={"file": ("g.png", garment, "image/png")},
                    data={"category": "top", "side": "front"},
                    headers=headers,
                )
                assert product is not None and product.status_code == 201, product and product.text
                setattr(seller, attr, product.json()["id"])
            spoil(files, seller.poison_id, "unreadable" if i % 2 else "storage")
            asset = call(
                rng,
                "POST",
                "/assets",
                files={"file": ("m.png", model, "image/png")},
                data={"type": "model"},
                headers=headers,
            )
            assert asset is not None and asset.status_code == 201, asset and asset.text
            seller.model_id = asset.json()["id"]
            self.sellers.append(seller)
        self.admin = self.register(rng, ADMIN_EMAIL)
        self.admin.pop("_id")
        make_admin(self.deployment, ADMIN_EMAIL)
        for i, seller in enumerate(self.sellers):
            grant: dict[str, Any] = {"user_id": seller.user_id, "credits": 15, "reason": "chaos start"}
            if i % 3 == 1:
                grant["tickets"] = {"lookbook": 5}
            if i % 5 == 2:
                grant["subscription"] = {"plan": "pro", "days": 30, "daily_quota": 5}
            granted = self.client.call(rng, "POST", "/admin/grants", json=grant, headers=self.admin)
            assert granted is not None and granted.status_code == 201, granted and granted.text

    # the requests
    def run(self) -> None:
        counter = iter(range(self.config.requests))
        counter_lock = threading.Lock()

        started = time.monotonic()

        def loop(index: int) -> None:
            rng = random.Random(self.config.seed * 1000 + index)
            while True:
                with counter_lock:
                    i = next(counter, None)
                if i is None:
                    return
                pause = started + i / self.config.rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # load shaping: requests at the configured rate
                try:
                    self.one(rng)
                except Exception as exc:  # noqa: BLE001 - a finding, and the load goes on
                    self.violations.add(f"the load generator failed: {exc!r}")
                finally:
                    with self.progress:
                        self.done += 1
                        self.progress.notify_all()

        threads = [threading.Thread(target=loop, args=(t,), daemon=True) for t in range(self.config.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def wait_done(self, count: int) -> None:
        with self.progress:
            self.progress.wait_for(lambda: self.done >= count)

    def count(self, kind: str, response: httpx.Response | None) -> httpx.Response | None:
        with self.lock:
            self.counts[(kind, "gave up" if response is None else response.status_code)] += 1
        return response

    def one(self, rng: random.Random) -> None:
        seller = rng.choice(self.sellers)
        roll = rng.random()
        if roll < 0.30:
            with self.lock:
                crowded = len(self.open_jobs) >= self.config.max_open_jobs
            if crowded:
                self.poll_open(rng)
            else:
                self.create(rng, seller, keyed=rng.random() < 0.6)
        elif roll < 0.38:
            self.retry_identical(rng, seller)
        elif roll < 0.40:
            self.reuse_key(rng, seller)
        elif roll < 0.46:
            self.cancel(rng, seller)
        elif roll < 0.49:
            self.admin_refund(rng)
        elif roll < 0.51:
            self.grant(rng, seller)
        else:
            self.read(rng, seller)

    def create(self, rng: random.Random, seller: Seller, keyed: bool) -> None:
        with self.lock:  # now and then; at least once, after the first fifth of the load
            poison = rng.random() < self.config.poison_rate or (
                not self.poison_jobs and self.done >= self.config.requests // 5
            )
        body = seller.body(rng, poison=poison)
        headers = dict(seller.headers)
        key = None
        if keyed:
            key = f"k-{uuid.uuid4().hex}"
            headers["Idempotency-Key"] = key
        kind = "create poison" if poison else f"create {'keyed' if keyed else 'unkeyed'}"
        response = self.count(kind, self.client.call(rng, "POST", "/vto/jobs", json=body, headers=headers))
        if response is not None and response.status_code == 202:
            job_id = response.json()["id"]
            with self.lock:
                self.accepted.add(job_id)
                self.open_jobs.add(job_id)
                seller.jobs.append(job_id)
                if poison:
                    self.poison_jobs.add(job_id)
                if key is not None:
                    seller.keyed[key] = (body, job_id)

    def retry_identical(self, rng: random.Random, seller: Seller) -> None:
        with self.lock:
            keys = list(seller.keyed.items())
        if not keys:
            return self.read(rng, seller)
        key, (body, job_id) = rng.choice(keys[-20:])
        headers = {**seller.headers, "Idempotency-Key": key}
        response = self.count(
            "retry identical", self.client.call(rng, "POST", "/vto/jobs", json=body, headers=headers)
        )
        if response is not None and response.status_code == 202 and response.json()["id"] != job_id:
            self.violations.add(f"key {key} answered job {response.json()['id']}, first {job_id}")
        return None

    def reuse_key(self, rng: random.Random, seller: Seller) -> None:
        with self.lock:
            keys = list(seller.keyed.items())
        if not keys:
            return self.read(rng, seller)
        key, (body, _job) = rng.choice(keys)
        other = {**body, "options": {**body["options"], "seed": body["options"]["seed"] + 1}}
        headers = {**seller.headers, "Idempotency-Key": key}
        response = self.count(
            "key reused, other body", self.client.call(rng, "POST", "/vto/jobs", json=other, headers=headers)
        )
        if response is not None and response.status_code == 202:
            self.violations.add(f"key {key} reused with another body gave a job ({response.json()['id']})")
        return None

    def cancel(self, rng: random.Random, seller: Seller) -> None:
        with self.lock:
            jobs = seller.jobs[-5:]
        if not jobs:
            return self.read(rng, seller)
        self.count(
            "cancel",
            self.client.call(rng, "POST", f"/vto/jobs/{rng.choice(jobs)}/cancel", headers=seller.headers),
        )
        return None

    def admin_refund(self, rng: random.Random) -> None:
        seller = rng.choice(self.sellers)
        with self.lock:
            jobs = list(seller.jobs)
        if not jobs:
            return None
        body = {"job_id": rng.choice(jobs), "reason": "chaos: customer complaint"}
        self.count(
            "admin refund", self.client.call(rng, "POST", "/points/refund", json=body, headers=self.admin)
        )
        return None

    def grant(self, rng: random.Random, seller: Seller) -> None:
        body: dict[str, Any] = {"user_id": seller.user_id, "credits": rng.randint(1, 8), "reason": "top-up"}
        if rng.random() < 0.3:
            body["tickets"] = {"lookbook": rng.randint(1, 3)}
        self.count("grant", self.client.call(rng, "POST", "/admin/grants", json=body, headers=self.admin))

    def poll_open(self, rng: random.Random) -> None:
        with self.lock:
            job_id = rng.choice(sorted(self.open_jobs)) if self.open_jobs else None
        owner = next((s for s in self.sellers if job_id in s.jobs), None) if job_id else None
        if job_id is None or owner is None:
            return self.read(rng, rng.choice(self.sellers))
        response = self.count(
            "read job (open)", self.client.call(rng, "GET", f"/vto/jobs/{job_id}", headers=owner.headers)
        )
        if response is not None and response.status_code == 200 and response.json()["status"] in TERMINAL:
            with self.lock:
                self.open_jobs.discard(job_id)
        return None

    def read(self, rng: random.Random, seller: Seller) -> None:
        roll = rng.random()
        if roll < 0.4 and seller.jobs:
            job_id = rng.choice(seller.jobs[-10:])
            response = self.count(
                "read job", self.client.call(rng, "GET", f"/vto/jobs/{job_id}", headers=seller.headers)
            )
            if response is not None and response.status_code == 200 and response.json()["status"] in TERMINAL:
                with self.lock:
                    self.open_jobs.discard(job_id)
        elif roll < 0.6:
            path = f"/vto/jobs?project_id={seller.project_id}&limit=20"
            self.count("list jobs", self.client.call(rng, "GET", path, headers=seller.headers))
        elif roll < 0.8:
            self.count("read points", self.client.call(rng, "GET", "/points", headers=seller.headers))
        elif roll < 0.9:
            self.count("read usage", self.client.call(rng, "GET", "/points/usage", headers=seller.headers))
        else:
            path = f"/vto/projects/{seller.project_id}/results"
            self.count("read gallery", self.client.call(rng, "GET", path, headers=seller.headers))


# --- duplicate result messages -----------------------------------------------------------------


class Duplicator:
    """Reads the results topic from its start (no group) and publishes a copy of a share of
    its messages (same key, same value): deliveries the ingestor must apply once."""

    def __init__(self, bootstrap: str, topic: str, rate: float, seed: int) -> None:
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.rng = random.Random(seed)
        self.published = 0
        self.errors: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="duplicator", daemon=True)

    def start(self) -> Duplicator:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)

    def _run(self) -> None:
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        common = KafkaQueue(self.bootstrap).client_config()  # the API version detected
        positions: dict[Any, int] = {}
        while not self.stop.is_set():
            consumer = producer = None
            try:
                consumer = KafkaConsumer(**common, enable_auto_commit=False, group_id=None)
                producer = KafkaProducer(**common, acks="all", retries=5)
                partitions = consumer.partitions_for_topic(self.topic)
                if not partitions:
                    self.stop.wait(1.0)  # the topic appears with the first result
                    continue
                tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
                consumer.assign(tps)
                for tp in tps:
                    if tp in positions:
                        consumer.seek(tp, positions[tp])
                    else:
                        consumer.seek_to_beginning(tp)
                while not self.stop.is_set():
                    for tp, records in consumer.poll(timeout_ms=500).items():
                        for record in records:
                            positions[tp] = record.offset + 1
                            if self.rng.random() < self.rate:
                                producer.send(self.topic, key=record.key, value=record.value)
                                self.published += 1
                    producer.flush(timeout=30)
            except Exception as exc:  # noqa: BLE001 - the broker restarts under it: reconnect
                self.errors[type(exc).__name__] += 1
                self.stop.wait(1.0)
            finally:
                for client in (consumer, producer):
                    if client is not None:
                        with contextlib.suppress(Exception):
                            client.close()


# --- chaos actions -----------------------------------------------------------------------------


@dataclass
class Action:
    at: int  # after this many requests
    kind: str  # "kill <role>", "broker restart", "postgres restart"


def schedule(config: Config, rng: random.Random) -> list[Action]:
    kinds = [f"kill {role}" for role in KILLED for _ in range(config.kills)]
    kinds += ["broker restart"] * config.broker_restarts + ["postgres restart"] * config.postgres_restarts
    rng.shuffle(kinds)
    low, high = int(config.requests * 0.1), max(int(config.requests * 0.1) + 1, int(config.requests * 0.85))
    return [
        Action(at, kind)
        for at, kind in zip(sorted(rng.randint(low, high) for _ in kinds), kinds, strict=True)
    ]


class Chaos:
    def __init__(
        self, deployment: Deployment, postgres: Postgres, kafka: local.LocalKafka, load: Load, config: Config
    ) -> None:
        self.deployment, self.postgres, self.kafka, self.load = deployment, postgres, kafka, load
        self.rng = random.Random(config.seed + 7)
        self.actions = schedule(config, self.rng)
        self.mode = config.postgres_stop_mode
        self.log: list[str] = []
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def note(self, what: str) -> None:
        line = f"{time.monotonic() - self.started:7.1f} s  after {self.load.done:>6} requests: {what}"
        self.log.append(line)
        print("  chaos:", line, flush=True)

    def _run(self) -> None:
        try:
            for action in self.actions:
                self.load.wait_done(action.at)
                self.deployment.check_alive()
                self.perform(action)
        except Exception as exc:  # noqa: BLE001 - reported by the run
            self.error = exc
            self.note(f"chaos action failed: {exc!r}")

    def perform(self, action: Action) -> None:
        started = time.monotonic()
        if action.kind.startswith("kill "):
            role = action.kind.removeprefix("kill ")
            names = [n for n in self.deployment.commands if n.split("-")[0] == role]
            name = self.rng.choice(names)
            self.deployment.kill(name)
            self.note(f"SIGKILL {name}, restarted ({time.monotonic() - started:.1f} s)")
        elif action.kind == "broker restart":
            self.kafka.restart_broker()  # SIGTERM (a controlled shutdown), same port and data
            self.note(f"Kafka broker restarted ({time.monotonic() - started:.1f} s)")
        elif action.kind == "postgres restart":
            self.postgres.stop(self.mode)
            time.sleep(self.rng.uniform(1.0, 3.0))  # load shaping: an outage of a few seconds
            self.postgres.start()
            elapsed = time.monotonic() - started
            self.note(f"PostgreSQL stopped ({self.mode}) and started again ({elapsed:.1f} s)")


# --- quiescence and checks (reading the database) ---------------------------------------------


def scalar(conn: psycopg.Connection[Any], sql: str, *params: Any) -> Any:
    row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def head_position(conn: psycopg.Connection[Any]) -> int:
    return int(scalar(conn, f"SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}"))


def open_work(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """What is still moving: open jobs, open reservations, runners behind the head."""
    head = head_position(conn)
    found = {
        "jobs not finished (vto_job)": scalar(
            conn, "SELECT count(*) FROM vto_job WHERE status NOT IN ('succeeded', 'failed', 'canceled')"
        ),
        "open reservations (point_balance)": scalar(
            conn, "SELECT coalesce(sum(pending_reservations), 0) FROM point_balance"
        ),
    }
    for name in ("outbox", "points", "jobs"):
        row = conn.execute("SELECT position FROM projection_tracking WHERE name = %s", (name,)).fetchone()
        found[f"{name} behind the head"] = head - (row[0] if row else 0)
    return {k: int(v) for k, v in found.items()}


def kafka_lag(bootstrap: str) -> dict[str, int]:
    """Messages not committed by each consumer group, per topic (end offset - committed)."""
    from kafka import KafkaConsumer, TopicPartition

    topics = Topics.with_prefix(TOPIC_PREFIX)
    groups = [
        (WORKER_GROUP, topics.requested),
        (INGESTOR_GROUP, topics.results),
        (f"{INGESTOR_GROUP}-progress", topics.progress),
    ]
    lags: dict[str, int] = {}
    for group, topic in groups:
        consumer = KafkaConsumer(
            **KafkaQueue(bootstrap).client_config(), group_id=group, enable_auto_commit=False
        )
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            ends = consumer.end_offsets(tps) if tps else {}
            lags[f"{group} on {topic}"] = sum(ends[tp] - (consumer.committed(tp) or 0) for tp in tps)
        finally:
            consumer.close()
    return lags


def messages_in(bootstrap: str, topic: str) -> int:
    """How many messages a topic holds (the sum of its partitions' end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**KafkaQueue(bootstrap).client_config(), group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        return sum(consumer.end_offsets(tps).values()) if tps else 0
    finally:
        consumer.close()


def quiesce(url: str, bootstrap: str, timeout: float) -> tuple[bool, dict[str, int], float]:
    started = time.monotonic()
    deadline = started + timeout
    while True:
        with psycopg.connect(url) as conn:
            work = open_work(conn)
        if not any(work.values()):
            with contextlib.suppress(Exception):
                work.update(kafka_lag(bootstrap))
                if not any(work.values()):
                    return True, work, time.monotonic() - started
        if time.monotonic() > deadline:
            return False, work, time.monotonic() - started
        time.sleep(0.5)  # polling a condition with a deadline


@dataclass
class JobHistory:
    """A job's reservation as the ledger's events say it, through ``ledger.effects``."""

    user_id: Any = None
    reserved: list[Charge] = field(default_factory=list)
    refunds: list[Charge] = field(default_factory=list)
    settled: int = 0
    status: ReservationStatus | None = None


def job_histories(url: str, batch: int = 5000) -> dict[Any, JobHistory]:
    mapper = ledger_mapper()
    jobs: dict[Any, JobHistory] = defaultdict(JobHistory)
    position = 0
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        while True:
            notified = decode(select_after(cur, position, batch), mapper)
            for n in notified:
                change = effect(n.event).job
                if change is None:
                    continue
                job = jobs[change.job_id]
                job.user_id = n.event.originator_id
                if change.reserved is not None:
                    job.reserved.append(change.reserved)
                if change.refunded is not None:
                    job.refunds.append(change.refunded)
                if change.settled:
                    job.settled += 1
                if change.status is not None:
                    job.status = change.status
            if len(notified) < batch:
                return jobs
            position = notified[-1].position


def check_ledger_jobs(url: str, accepted: set[str]) -> tuple[list[str], Counter[str]]:
    """Every job reserved once, finished, and refunded exactly once when it failed or was
    canceled (at most once when it succeeded: an admin refund), to its source."""
    problems: list[str] = []
    outcomes: Counter[str] = Counter()
    jobs = job_histories(url)
    for job_id, job in jobs.items():
        outcomes[str(job.status)] += 1
        if len(job.reserved) != 1:
            problems.append(f"job {job_id}: reserved {len(job.reserved)} times (double charge)")
            continue
        charge = job.reserved[0]
        if job.status is None or job.status.open:
            problems.append(f"job {job_id}: not finished in the ledger ({job.status})")
        refunded_expected = job.status in (
            ReservationStatus.FAILED,
            ReservationStatus.CANCELED,
            ReservationStatus.EXPIRED,
        )
        if refunded_expected and len(job.refunds) != 1:
            problems.append(f"job {job_id}: {job.status} refunded {len(job.refunds)} times")
        if len(job.refunds) > 1:
            problems.append(f"job {job_id}: refunded {len(job.refunds)} times")
        for refund in job.refunds:
            if refund != charge:
                problems.append(f"job {job_id}: refund {refund} differs from the charge {charge}")
        if job.settled > 1:
            problems.append(f"job {job_id}: settled {job.settled} times")
        outcomes["(refunds)"] += len(job.refunds)
    missing = {j for j in accepted if uuid.UUID(j) not in jobs}
    problems.extend(f"job {j}: answered 202 but not in the ledger" for j in sorted(missing))
    return problems, outcomes


def check_read_models(url: str, accepted: set[str]) -> list[str]:
    """vto_job: every accepted job there and finished, one job per idempotency key; its usage
    lines: one reservation, at most one settlement and one refund, matching the job's charge
    and refund."""
    problems: list[str] = []
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT job_id::text, status, charge_source, charge_amount, refund_source, refund_amount "
            "FROM vto_job"
        ).fetchall()
        jobs = {r[0]: r[1:] for r in rows}
        lines: dict[str, Counter[str]] = defaultdict(Counter)
        amounts: dict[tuple[str, str], tuple[str, int]] = {}
        for job_id, type_, source, amount in conn.execute(
            "SELECT job_id::text, type, source, amount FROM point_usage WHERE job_id IS NOT NULL"
        ).fetchall():
            lines[job_id][type_] += 1
            amounts[(job_id, type_)] = (source, amount)
        keys = conn.execute(
            "SELECT user_id, idempotency_key, count(*) FROM vto_job WHERE idempotency_key IS NOT NULL "
            "GROUP BY user_id, idempotency_key HAVING count(*) > 1"
        ).fetchall()
    problems.extend(f"idempotency key {k} of user {u}: {n} jobs" for u, k, n in keys)
    for job_id in sorted(accepted - set(jobs)):
        problems.append(f"job {job_id}: answered 202 but not in vto_job")
    for job_id, (status, source, amount, refund_source, refund_amount) in jobs.items():
        if status not in TERMINAL:
            problems.append(f"job {job_id}: {status} in vto_job")
        count = lines[job_id]
        if count["reservation"] != 1 or count["settlement"] > 1 or count["refund"] > 1:
            problems.append(f"job {job_id}: usage lines {dict(count)}")
            continue
        if amounts.get((job_id, "reservation")) != (source, -amount):
            problems.append(f"job {job_id}: reservation line {amounts.get((job_id, 'reservation'))}")
        if status in ("failed", "canceled") and count["refund"] != 1:
            problems.append(f"job {job_id}: {status} without a refund line")
        if count["refund"] and amounts.get((job_id, "refund")) != (refund_source, refund_amount):
            problems.append(f"job {job_id}: refund line {amounts.get((job_id, 'refund'))} vs vto_job")
        if count["refund"] and (refund_source, refund_amount) != (source, amount):
            problems.append(
                f"job {job_id}: refunded {refund_amount} {refund_source}, charged {amount} {source}"
            )
    return problems


def dump_read_models(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {
            t: conn.execute(f"SELECT * FROM {t} ORDER BY {key}").fetchall() for t, key in READ_MODELS.items()
        }


def check_rebuild(url: str) -> list[str]:
    """The read models equal a rebuild from the start of the log (``vto ledger rebuild``'s
    code: replayed into fresh tables, then swapped in)."""
    from projections.rebuild import rebuild
    from projections.registry import all_projections

    before = dump_read_models(url)
    for projection in all_projections():
        rebuild(url, projection)
    after = dump_read_models(url)
    problems = []
    for table in READ_MODELS:
        if before[table] != after[table]:
            differ = set(before[table]) ^ set(after[table])
            problems.append(
                f"{table}: {len(differ)} rows differ from a rebuild, e.g. {sorted(differ, key=str)[:2]}"
            )
    return problems


# --- the run -----------------------------------------------------------------------------------


def run(config: Config) -> int:
    started = time.monotonic()
    root = config.root or Path(tempfile.mkdtemp(prefix="vto-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # as root, pgserver runs PostgreSQL as its own user
    print(f"chaos run in {root} (process logs in {root / 'logs'})", flush=True)
    violations = Violations()
    postgres = Postgres(root)
    try:
        postgres.configure(max_connections="400")
        kafka = local.start(root / "kafka")
    except BaseException:
        postgres.close()
        raise
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VTO_")},  # only the run's own
        "VTO_DATABASE_URL": postgres.url,
        "VTO_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "VTO_KAFKA_TOPIC_PREFIX": TOPIC_PREFIX,
        "VTO_WORKER_GROUP": WORKER_GROUP,
        "VTO_INGESTOR_GROUP": INGESTOR_GROUP,
        "VTO_DATA_DIR": str(root / "data"),
        "VTO_JWT_SECRET": SECRET,
        "VTO_GENERATOR_FAILURE_RATE": str(config.failure_rate),
        "VTO_JOB_TIMEOUT_S": str(config.job_timeout_s),
        "VTO_SWEEPER_INTERVAL_S": "2",
        "VTO_DB_POOL_SIZE": "5",
        # The harness registers every seller from this one address (one burst, as a load test).
        "VTO_REGISTER_MAX_PER_ADDRESS": str(10 * config.users + 10),
        "VTO_MAIL_MAX_PER_CLIENT_ADDRESS": str(10 * config.users + 10),
    }
    deployment = Deployment(root, env)
    duplicator: Duplicator | None = None
    ok = False
    try:
        migrated = deployment.cli("migrate")
        if migrated.returncode != 0:
            raise RuntimeError(f"vto migrate failed: {migrated.stderr}")
        deployment.start_all()
        load = Load(config, deployment, violations)
        load.set_up(random.Random(config.seed))
        print(
            f"set up {len(load.sellers)} sellers and an admin ({time.monotonic() - started:.0f} s)",
            flush=True,
        )
        duplicator = Duplicator(
            kafka.bootstrap, Topics.with_prefix(TOPIC_PREFIX).results, config.duplicate_rate, config.seed
        ).start()
        chaos = Chaos(deployment, postgres, kafka, load, config)
        chaos.thread.start()
        load_started = time.monotonic()
        load.run()
        load_seconds = time.monotonic() - load_started
        chaos.thread.join()
        duplicator.close()
        deployment.check_alive()
        print(f"load done in {load_seconds:.0f} s; quiescing ...", flush=True)
        quiet, work, quiesce_seconds = quiesce(postgres.url, kafka.bootstrap, config.quiesce_timeout_s)
        deployment.check_alive()
        audited = deployment.cli("ledger", "audit", "--wait", "60")
        dead_letters = messages_in(kafka.bootstrap, Topics.with_prefix(TOPIC_PREFIX).dead_letter)
        statuses = deployment.stop_all()

        problems: dict[str, list[str]] = {}
        problems["requests"] = list(violations.items)
        problems["chaos"] = [f"chaos action failed: {chaos.error!r}"] if chaos.error else []
        problems["processes"] = list(deployment.unexpected_exits) + [
            f"{name} exited with {rc} on SIGTERM" for name, rc in statuses.items() if rc != 0
        ]
        problems["quiescence"] = (
            [] if quiet else [f"not quiet after {config.quiesce_timeout_s:.0f} s: {work}"]
        )
        ledger_problems, outcomes = check_ledger_jobs(postgres.url, load.accepted)
        problems["ledger jobs"] = ledger_problems
        problems["read models"] = check_read_models(postgres.url, load.accepted)
        problems["audit"] = (
            [] if audited.returncode == 0 else [f"vto ledger audit exited {audited.returncode}"]
        )
        problems["rebuild"] = check_rebuild(postgres.url)
        poison = _poison_outcomes(postgres.url, load.poison_jobs)
        problems["poison jobs"] = [
            f"{n} poison jobs {what}" for what, n in poison.items() if "succeeded" in what
        ]

        print()
        print("== what it did ==")
        print(
            f"{config.requests} requests ({config.rate:g}/s) from {config.threads} threads over "
            f"{len(load.sellers)} sellers "
            f"in {load_seconds:.0f} s (seed {config.seed}); job timeout {config.job_timeout_s:g} s, "
            f"generator failure rate {config.failure_rate:g}"
        )
        print("requests by kind and status:")
        kinds = sorted({k for k, _ in load.counts})
        for kind in kinds:
            by_status = {s: n for (k, s), n in sorted(load.counts.items(), key=str) if k == kind}
            print(f"  {kind:<24} {sum(by_status.values()):>6}  {by_status}")
        print("retries inside those requests:", dict(load.stats) or "none")
        print(f"jobs accepted (202): {len(load.accepted)}, of them poison: {len(load.poison_jobs)}")
        reconnects = dict(duplicator.errors)
        print(f"duplicate result messages published: {duplicator.published} (reconnects {reconnects})")
        print("chaos actions:")
        for line in chaos.log:
            print(f"  {line}")
        print(f"process starts: {dict(deployment.starts)}")
        print()
        print("== what it found ==")
        print(f"quiet after {quiesce_seconds:.0f} s: {quiet} {work}")
        print(f"ledger: jobs by final reservation status {dict(outcomes)}")
        print(f"poison jobs: {poison}; messages in the dead-letter topic: {dead_letters}")
        print("vto ledger audit:")
        for line in audited.stdout.strip().splitlines()[-12:]:
            print(f"  {line}")
        print(f"exit statuses on SIGTERM: {statuses}")
        total = 0
        for what, found in problems.items():
            total += len(found)
            print(f"{what}: {'ok' if not found else f'{len(found)} violations'}")
            for line in found[:20]:
                print(f"  {line}")
            if len(found) > 20:
                print(f"  ... and {len(found) - 20} more")
        print(f"violations: {total}")
        print("OK" if total == 0 else "FAILED")
        print(f"{time.monotonic() - started:.0f} s in all", flush=True)
        ok = total == 0
    finally:
        if duplicator is not None:
            duplicator.close()
        deployment.kill_all()
        kafka.stop()
        postgres.close()
        if not config.keep and ok:
            shutil.rmtree(root, ignore_errors=True)
        elif not ok:
            print(f"kept {root} for inspection", flush=True)
    return 0 if ok else 1


def _poison_outcomes(url: str, poison: set[str]) -> dict[str, int]:
    if not poison:
        return {}
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status, coalesce(error->>'code', '-') FROM vto_job WHERE job_id::text = ANY(%s)",
            (sorted(poison),),
        ).fetchall()
    return dict(Counter(f"{status} ({code})" for status, code in rows))


def parse(argv: list[str] | None) -> Config:
    defaults = Config()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=defaults.requests)
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--rate", type=float, default=defaults.rate, help="requests per second")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--failure-rate", type=float, default=defaults.failure_rate)
    parser.add_argument("--job-timeout", type=float, default=defaults.job_timeout_s, help="VTO_JOB_TIMEOUT_S")
    parser.add_argument("--kills", type=int, default=defaults.kills, help="SIGKILLs of each kind of process")
    parser.add_argument("--broker-restarts", type=int, default=defaults.broker_restarts)
    parser.add_argument("--postgres-restarts", type=int, default=defaults.postgres_restarts)
    parser.add_argument(
        "--postgres-stop-mode", choices=["fast", "immediate"], default=defaults.postgres_stop_mode
    )
    parser.add_argument("--duplicate-rate", type=float, default=defaults.duplicate_rate)
    parser.add_argument("--poison-rate", type=float, default=defaults.poison_rate)
    parser.add_argument("--max-open-jobs", type=int, default=defaults.max_open_jobs)
    parser.add_argument("--quiesce-timeout", type=float, default=defaults.quiesce_timeout_s)
    parser.add_argument("--dir", type=Path, default=None, help="run directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    return Config(
        requests=args.requests,
        users=args.users,
        threads=args.threads,
        rate=args.rate,
        seed=args.seed,
        failure_rate=args.failure_rate,
        job_timeout_s=args.job_timeout,
        kills=args.kills,
        broker_restarts=args.broker_restarts,
        postgres_restarts=args.postgres_restarts,
        postgres_stop_mode=args.postgres_stop_mode,
        duplicate_rate=args.duplicate_rate,
        poison_rate=args.poison_rate,
        max_open_jobs=args.max_open_jobs,
        quiesce_timeout_s=args.quiesce_timeout,
        root=args.dir,
        keep=args.keep,
    )


def main(argv: list[str] | None = None) -> int:
    return run(parse(argv))


if __name__ == "__main__":
    sys.exit(main())
