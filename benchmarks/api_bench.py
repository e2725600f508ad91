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
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from benchmarks.harness import SECRET, Processes, Seeded, seed, wait_http
from infra.database import embedded_postgres_url, stop_embedded_postgres
from infra.migrate import upgrade
from ledger.status import JobStatus


def skip_published_jobs(url: str) -> None:
    """Benchmark only: start the outbox relay at the head of the log."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO projection_tracking (name, position) "
            "SELECT 'outbox', coalesce(max(notification_id), 0) FROM ledger_events "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position"
        )


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
