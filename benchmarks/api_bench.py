"""Job creation over real HTTP, and jobs through the whole pipeline.

    uv run python benchmarks/api_bench.py [--users 1000] [--jobs 40] [--no-pipeline]

Starts an embedded PostgreSQL in a temporary directory, seeds users (each with a project, a
product, a model photo and credits), then runs as separate processes what a deployment runs:
`vto api` (uvicorn with httptools/uvloop) and `vto projector`. An asyncio load generator (httpx)
sends `POST /api/v1/vto/jobs` at 1, 16 and 64 concurrent clients spread over the users, and
with all 64 on one user, and prints p50/p95/p99 latency and requests per second.

Pipeline part: starts the local Kafka broker (scripts/kafka's code) and the `vto relay`,
`vto ingestor` and two `vto worker` processes, then measures the time from 202 to succeeded
with the offline generator (one job at a time) and jobs per second for a burst of jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from PIL import Image, ImageDraw

from command_api.auth import tokens
from command_api.catalog.models import Asset, Collection, Product, Project
from command_api.users.models import User
from infra.database import embedded_postgres_url, stop_embedded_postgres
from infra.db import make_engine, make_sessionmaker
from infra.ledger_store import postgres_ledger
from infra.migrate import upgrade
from infra.settings import Settings
from infra.storage import LocalStorage
from ledger.status import JobStatus

SECRET = "bench-" + "s" * 40
LOGS = Path(tempfile.gettempdir()) / "vto-bench-logs"  # the processes' output, kept for reading


@dataclass
class Seeded:
    token: str
    body: dict[str, Any]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def seed(url: str, data_dir: Path, users: int, credits: int, prefix: str = "bench") -> list[Seeded]:
    from skimage import data

    storage = LocalStorage(data_dir / "files", SECRET.encode())
    model = png(Image.fromarray(np.asarray(data.astronaut())).resize((384, 384)))
    garment = Image.new("RGB", (256, 256), (245, 245, 245))
    ImageDraw.Draw(garment).rectangle((60, 40, 196, 230), fill=(200, 30, 40))
    garment_bytes = png(garment)
    engine = make_engine(url, 4)
    sessions = make_sessionmaker(engine)
    ledger = postgres_ledger(Settings(), url)
    seeded = []
    with sessions() as session:
        for i in range(users):
            user = User(email=f"{prefix}{i}@example.com", name="Bench", language="en", token_version=0)
            session.add(user)
            session.flush()
            collection = Collection(owner_id=user.id, name="bench")
            session.add(collection)
            session.flush()
            project = Project(collection_id=collection.id, owner_id=user.id, name="bench")
            session.add(project)
            session.flush()
            model_key, garment_key = f"{prefix}/{i}/model.png", f"{prefix}/{i}/garment.png"
            storage.put(model_key, model, "image/png")
            storage.put(garment_key, garment_bytes, "image/png")
            product = Product(
                project_id=project.id,
                category="top",
                side="front",
                storage_key=garment_key,
                media_type="image/png",
                width=256,
                height=256,
                size_bytes=1,
            )
            asset = Asset(
                owner_id=user.id,
                type="model",
                storage_key=model_key,
                media_type="image/png",
                width=384,
                height=384,
                size_bytes=1,
            )
            session.add_all([product, asset])
            session.flush()
            token, _ = tokens.issue(SECRET, user.id, 0, "access", tokens.REFRESH_TTL)
            body = {
                "project_id": str(project.id),
                "kind": "image",
                "product_ids": [str(product.id)],
                "model_asset_id": str(asset.id),
            }
            seeded.append(Seeded(token, body))
            ledger.grant(user.id, "bench", credits=credits)
        session.commit()
    ledger.close()
    engine.dispose()
    return seeded


class Processes:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-c", "from infra.cli import main; main()", *args]
        LOGS.mkdir(exist_ok=True)
        with (LOGS / f"{args[0]}-{len(self.running)}.log").open("wb") as log:
            process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.running.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.running):
            process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def skip_published_jobs(url: str) -> None:
    """Benchmark only: start the outbox relay at the head of the log."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO projection_tracking (name, position) "
            "SELECT 'outbox', coalesce(max(notification_id), 0) FROM ledger_events "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
        )


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def quantile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100)[q - 1] if len(samples) > 1 else samples[0]


async def load(base: str, seeded: list[Seeded], clients: int, requests: int, options: dict[str, Any]) -> None:
    latencies: list[float] = []
    statuses: dict[int | str, int] = {}
    counter = iter(range(requests))

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in counter:
            who = seeded[i % len(seeded)]
            start = time.perf_counter()
            try:
                response = await client.post(
                    f"{base}/api/v1/vto/jobs",
                    json={**who.body, "options": {**options, "seed": i}},
                    headers={"Authorization": f"Bearer {who.token}"},
                )
            except httpx.TransportError as exc:  # counted and printed: a failed request
                key: int | str = type(exc).__name__
            else:
                key = response.status_code
                latencies.append(time.perf_counter() - start)
            statuses[key] = statuses.get(key, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ms = [x * 1000 for x in latencies]
    label = f"{clients} clients over {len(seeded)} user{'s' if len(seeded) > 1 else ''}"
    print(
        f"POST /vto/jobs, {label:<28} p50 {quantile(ms, 50):6.1f} ms  p95 {quantile(ms, 95):6.1f} ms  "
        f"p99 {quantile(ms, 99):6.1f} ms  {requests / elapsed:6.0f} req/s  statuses {statuses}"
    )


async def pipeline_figures(base: str, seeded: list[Seeded], jobs: int, options: dict[str, Any]) -> None:
    async with httpx.AsyncClient(timeout=60) as client:

        async def run_one(i: int) -> tuple[float, float, float]:
            who = seeded[i % len(seeded)]
            headers = {"Authorization": f"Bearer {who.token}"}
            created = await client.post(
                f"{base}/api/v1/vto/jobs",
                json={**who.body, "options": {**options, "seed": i}},
                headers=headers,
            )
            accepted = time.perf_counter()
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            while True:
                job = (await client.get(f"{base}/api/v1/vto/jobs/{job_id}", headers=headers)).json()
                if JobStatus(job["status"]).finished:
                    assert job["status"] == JobStatus.SUCCEEDED, job
                    done = time.perf_counter()
                    return accepted, done, done - accepted
                await asyncio.sleep(0.02)  # polling interval of the measurement

        await run_one(10_000)  # warm-up: workers load their models
        sequential = [(await run_one(10_001 + i))[2] * 1000 for i in range(max(5, jobs // 4))]
        size = f"{options['width']}x{options['height']}"
        print(
            f"202 -> succeeded, one job at a time ({len(sequential)} jobs, {size}): "
            f"p50 {quantile(sequential, 50):.0f} ms  p99 {quantile(sequential, 99):.0f} ms"
        )
        started = time.perf_counter()
        results = await asyncio.gather(*(run_one(20_000 + i) for i in range(jobs)))
        elapsed = max(r[1] for r in results) - started
        burst = [r[2] * 1000 for r in results]
        print(
            f"burst of {jobs} jobs through the pipeline with 2 workers: {jobs / elapsed:.2f} jobs/s "
            f"({elapsed:.1f} s; 202 -> succeeded p50 {quantile(burst, 50):.0f} ms, "
            f"p99 {quantile(burst, 99):.0f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=40, help="jobs in the pipeline burst")
    parser.add_argument("--requests", type=int, default=3000, help="requests per concurrency level")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--no-pipeline", action="store_true")
    parser.add_argument("--api-workers", type=int, default=1, help="uvicorn worker processes of vto api")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vto-api-bench-"))
    root.chmod(0o755)
    data_dir = root / "data"
    url = embedded_postgres_url(root)
    upgrade(url)
    print(f"seeding {args.users} users ...", flush=True)
    seeded = seed(url, data_dir, args.users, credits=100_000)
    env = {**os.environ, "VTO_DATABASE_URL": url, "VTO_JWT_SECRET": SECRET, "VTO_DATA_DIR": str(data_dir)}
    processes = Processes(env)
    broker = None
    base = f"http://127.0.0.1:{args.port}"
    small = {"width": 384, "height": 512, "num_outputs": 1}
    try:
        processes.start("projector")
        processes.start("api", "--port", str(args.port), "--workers", str(args.api_workers))
        wait_http(f"{base}/healthz")
        asyncio.run(load(base, seeded, 4, 200, small))  # warm-up
        asyncio.run(load(base, seeded, 1, min(args.requests, 500), small))
        asyncio.run(load(base, seeded, 16, args.requests, small))
        asyncio.run(load(base, seeded, 64, args.requests, small))
        asyncio.run(load(base, seeded[:1], 64, args.requests, small))
        if not args.no_pipeline:
            from infra.kafka import local

            broker = local.start(root / "kafka")
            processes.env = {
                **env,
                "VTO_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "VTO_KAFKA_API_VERSION": "0.9",
            }
            # The thousands of jobs created above are not part of this measurement: the relay
            # starts after them (its tracking position moved to the head of the log).
            fresh = seed(url, data_dir, 20, credits=1_000, prefix="pipeline")
            skip_published_jobs(url)
            processes.start("ingestor")
            processes.start("worker")
            processes.start("worker")
            processes.start("relay")
            options = {"width": 768, "height": 1024, "num_outputs": 1}
            asyncio.run(pipeline_figures(base, fresh, args.jobs, options))
    finally:
        processes.stop()
        if broker is not None:
            broker.stop()
        stop_embedded_postgres(root)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
