"""Open live event streams (``GET /vto/jobs/{id}/events``) per API process: its memory (RSS)
and CPU while they sit idle, and the time one change takes to reach every stream.

    uv run python benchmarks/sse_bench.py [--streams 1000] [--idle-s 5]

Runs ``vto projector`` and one ``vto api`` process (``--workers 1``) on a scratch database
(``VTO_DATABASE_URL``, or an embedded PostgreSQL in a temporary directory), orders one job,
opens ``--streams`` streams on it from this process (httpx, asyncio), waits until each has its
first event, measures the API process's RSS and CPU over ``--idle-s`` seconds (keep-alive
comments every ``VTO_SSE_KEEPALIVE_S``, 15 s), then writes one progress row as the pipeline's
progress recorder does and times its arrival on every stream."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import psycopg

from benchmarks.harness import SECRET, Processes, seed, wait_http
from infra.database import embedded_postgres_url, stop_embedded_postgres, with_dbname
from infra.kafka.local import free_port
from infra.migrate import upgrade
from pipeline.progress import UPSERT

API = "/api/v1"


async def follow(
    http: httpx.AsyncClient, path: str, token: str, opened: asyncio.Event, counter: list[int], total: int
) -> float:
    """One stream: signals when its first event came, returns when the progress event came."""
    headers = {"Authorization": f"Bearer {token}"}
    async with http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, response.status_code
        async for line in response.aiter_lines():
            if line == "id: 0":
                counter[0] += 1
                if counter[0] == total:
                    opened.set()
            elif line == "id: 10500":
                return time.perf_counter()
    raise AssertionError("the stream ended before the progress event")


async def run(
    base: str, url: str, token: str, job_id: str, streams: int, idle_s: float, api_pid: int
) -> None:
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=0)
    timeout = httpx.Timeout(120.0)
    process = psutil.Process(api_pid)
    before = sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as http:
        opened, counter = asyncio.Event(), [0]
        began = time.perf_counter()
        path = f"{API}/vto/jobs/{job_id}/events"
        tasks = [
            asyncio.create_task(follow(http, path, token, opened, counter, streams)) for _ in range(streams)
        ]
        await asyncio.wait_for(opened.wait(), 120)
        open_s = time.perf_counter() - began
        members = [process, *process.children(recursive=True)]
        rss = sum(p.memory_info().rss for p in members)
        cpu_before = sum(sum(p.cpu_times()[:2]) for p in members)
        await asyncio.sleep(idle_s)  # the idle measurement's span, not a synchronisation
        cpu_idle = (sum(sum(p.cpu_times()[:2]) for p in members) - cpu_before) / idle_s
        written = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            now = datetime.now(UTC)
            conn.execute(UPSERT, (job_id, now, 0.5, now))
        arrivals = sorted(t - written for t in await asyncio.gather(*tasks))
    print(f"{streams} open streams on one API process (opened in {open_s:.1f} s)")
    print(
        f"API process RSS: {rss / 2**20:.0f} MiB with the streams, {before / 2**20:.0f} MiB before "
        f"({(rss - before) / streams / 1024:.0f} KiB per stream)"
    )
    print(f"API process CPU while idle: {cpu_idle * 100:.1f} % of one core")
    print(
        f"one change to every stream: all {arrivals[-1] * 1000:.0f} ms, "
        f"median {statistics.median(arrivals) * 1000:.0f} ms, first {arrivals[0] * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--idle-s", type=float, default=5.0)
    args = parser.parse_args()
    external = os.environ.get("VTO_DATABASE_URL")
    data_dir = Path(tempfile.mkdtemp(prefix="vto-sse-bench-"))
    data_dir.chmod(0o755)
    server = external or embedded_postgres_url(data_dir)
    processes = None
    try:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS vto_bench_sse WITH (FORCE)")
            conn.execute("CREATE DATABASE vto_bench_sse")
        url = with_dbname(server, "vto_bench_sse")
        upgrade(url)
        seller = seed(url, data_dir / "vto", users=1, credits=10)[0]
        port = free_port()
        env = {
            **os.environ,
            "VTO_DATABASE_URL": url,
            "VTO_JWT_SECRET": SECRET,
            "VTO_DATA_DIR": str(data_dir / "vto"),
            "VTO_SSE_MAX_STREAMS_PER_ACCOUNT": str(args.streams),
        }
        processes = Processes(env)
        processes.start("projector")
        api = processes.start("api", "--port", str(port), "--workers", "1")
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        headers = {"Authorization": f"Bearer {seller.token}"}
        ordered = httpx.post(f"{base}{API}/vto/jobs", json=seller.body, headers=headers, timeout=60)
        assert ordered.status_code == 202, ordered.text
        asyncio.run(run(base, url, seller.token, ordered.json()["id"], args.streams, args.idle_s, api.pid))
    finally:
        if processes is not None:
            processes.stop()
        if not external:
            stop_embedded_postgres(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
