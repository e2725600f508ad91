"""Webhook delivery figures: deliveries per second to a local receiver (a backlog of finished
jobs drained by one dispatcher), and the latency from a job's completion (its ledger command
returned) to the receipt of its webhook, p50/p99, while jobs finish at a steady rate.

    uv run python benchmarks/webhook_bench.py [--jobs 2000] [--users 20] [--rate 20] [--seconds 20]

The receiver is a uvicorn process (httptools) answering 200 at once; the dispatcher runs in
this process with the jobs projection, as in ``vto serve``. Uses ``VTO_DATABASE_URL`` (a
scratch database is created beside it) or an embedded PostgreSQL in a temporary directory."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from command_api.webhooks.service import job_renderer
from infra.database import embedded_postgres_url, stop_embedded_postgres, with_dbname
from infra.ledger_store import postgres_ledger
from infra.migrate import upgrade
from infra.orm import make_engine
from infra.settings import Settings
from infra.storage import LocalStorage
from ledger.application import LedgerApplication
from pipeline.webhooks.dispatcher import WebhookDispatcher
from projections.runner import Projector

OUTPUTS = [{"storage_key": "outputs/bench.png", "media_type": "image/png", "width": 768, "height": 1024}]


def _receive(port: int, log_path: str, ready: Any) -> None:
    """The receiver process: records (job id, receipt time) of every webhook; writes them to
    ``log_path`` when it is told to stop (SIGTERM)."""
    import uvicorn

    arrivals: list[tuple[str, float]] = []

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    ready.set()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    Path(log_path).write_text(json.dumps(arrivals))
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        arrivals.append((json.loads(body)["data"]["id"], time.time()))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, http="httptools")


class Receiver:
    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = Path(tempfile.mkdtemp(prefix="vto-bench-hooks-")) / "arrivals.json"
        context = multiprocessing.get_context("spawn")
        ready = context.Event()
        self.process = context.Process(target=_receive, args=(self.port, str(self.log), ready), daemon=True)
        self.process.start()
        if not ready.wait(30):
            raise RuntimeError("the receiver did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def stop(self) -> dict[str, float]:
        """Stops the receiver; the first receipt time of each job."""
        self.process.terminate()
        self.process.join(30)
        first: dict[str, float] = {}
        for job_id, at in json.loads(self.log.read_text()):
            first.setdefault(job_id, at)
        shutil.rmtree(self.log.parent, ignore_errors=True)
        return first


def scratch_db(server: str, name: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    url = with_dbname(server, name)
    upgrade(url)
    return url


def order(
    ledger: LedgerApplication, users: list[uuid.UUID], count: int, url: str
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    jobs = []
    for i in range(count):
        user, job_id = users[i % len(users)], uuid.uuid4()
        request = {"project_id": "bench", "webhook": url, "webhook_events_filter": ["completed"]}
        ledger.request_job(user, job_id, "image", request)
        jobs.append((user, job_id))
    return jobs


def count_received(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM webhook_messages WHERE state = 'delivered'").fetchone()
    return int(row[0]) if row else 0


def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000, help="backlog drained for deliveries/s")
    parser.add_argument("--users", type=int, default=20, help="accounts the jobs belong to")
    parser.add_argument("--rate", type=float, default=20.0, help="jobs finished per second (latency)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long jobs finish at --rate")
    args = parser.parse_args()
    external = os.environ.get("VTO_DATABASE_URL")
    data_dir = Path(tempfile.mkdtemp(prefix="vto-bench-pg-"))
    data_dir.chmod(0o755)
    server = external or embedded_postgres_url(data_dir)
    receiver = Receiver()
    try:
        url = scratch_db(server, "vto_bench_webhooks")
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=data_dir / "vto",
            webhook_allow_private_networks=True,
            webhook_poll_interval_s=0.5,
        )
        ledger = postgres_ledger(settings, url)
        users = [uuid.uuid4() for _ in range(args.users)]
        for user in users:
            ledger.open_account(user)
            ledger.grant(user, "bench", credits=10 * (args.jobs + int(args.rate * args.seconds)))
        projector = Projector(url, poll_interval=1.0).start()
        engine = make_engine(url, pool_size=2)
        render = job_renderer(
            engine, LocalStorage(data_dir / "files", b"bench"), 3600, "http://127.0.0.1:8000"
        )
        try:
            # 1. a backlog of finished jobs, then one dispatcher drains it
            backlog = order(ledger, users, args.jobs, receiver.url)
            for user, job_id in backlog:
                ledger.complete_job(user, job_id, OUTPUTS)
            projector.wait_for(ledger.position(), 120)
            dispatcher = WebhookDispatcher.build(settings, url, render)
            started = time.monotonic()
            dispatcher.start()
            try:
                wait(lambda: count_received(url) >= args.jobs, 600, "the backlog")
                drained = time.monotonic() - started
                print(
                    f"deliveries: {args.jobs} webhooks of {args.users} accounts in {drained:.2f} s: "
                    f"{args.jobs / drained:,.0f} deliveries/s (follower, rendering, signing, POST, record)"
                )
                # 2. jobs finishing at a steady rate: completion -> receipt
                steady = order(ledger, users, int(args.rate * args.seconds), receiver.url)
                finished: dict[str, float] = {}
                lock = threading.Lock()
                begin = time.monotonic()
                for i, (user, job_id) in enumerate(steady):
                    pause = begin + i / args.rate - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)  # the benchmark's pace
                    ledger.complete_job(user, job_id, OUTPUTS)
                    with lock:
                        finished[str(job_id)] = time.time()
                wait(lambda: count_received(url) >= args.jobs + len(steady), 120, "the steady jobs")
            finally:
                dispatcher.stop()
        finally:
            projector.stop()
            engine.dispose()
            ledger.close()
        received = receiver.stop()
        latencies = sorted(received[job] - at for job, at in finished.items())
        q = statistics.quantiles(latencies, n=100)
        print(
            f"completion -> receipt at {args.rate:g} jobs/s for {args.seconds:g} s ({len(latencies)} jobs): "
            f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
        )
        print(f"{os.cpu_count()} CPUs")
    finally:
        if receiver.process.is_alive():
            receiver.process.terminate()
        if not external:
            stop_embedded_postgres(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
