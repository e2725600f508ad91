"""Pipeline throughput per queue, side by side: jobs per second through relay -> worker ->
ingestor on the local Kafka 0.9 broker, on Tansu (the modern protocol) and on the in-process
queue, with a no-op generator (so what is measured is the pipeline, not the pictures).

Run: uv run --frozen python -m benchmarks.pipeline_bench [--jobs 2000] [--workers 2]
     [--brokers kafka-0.9,tansu,memory] [--database-url URL] [--json FILE]

For each queue, in one run on the same PostgreSQL server: a fresh migrated database, a broker
of its own (started here, stopped at the end), ``--jobs`` jobs ordered in the ledger first
(spread over 50 users; not timed), then the pipeline's processes as threads of this process
(``generator_worker.runtime.Pipeline``: the relay, ``--workers`` workers, the ingestor and the
progress recorder, on the production settings; ``--session-timeout-ms`` shortens the groups'
joins) started, and the clock runs until the
ingestor has applied every result. Reported per queue: ``join_s`` (start to the first applied
result: the consumer groups' first joins, half the session timeout on Tansu), ``total_s``,
``jobs/s`` over the whole run and ``steady jobs/s`` from the first applied result to the last.
Each job does what a real one does but generate: the worker reads the ledger account,
counts its attempt in PostgreSQL, loads the inputs, stores a 1x1 PNG, records the outcome,
publishes progress and the result (flushed: acknowledged by the broker); the ingestor appends
``JobCompleted`` to the ledger. Without ``--database-url`` an embedded PostgreSQL (pgserver)
is started in a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from PIL import Image

from generator_worker.generation import GeneratedOutput, GenerationRequest, GenerationResult, Generator
from generator_worker.generation.offline import OFFLINE_INFO
from generator_worker.runtime import Pipeline
from infra.database import embedded_postgres_url, stop_embedded_postgres, with_dbname
from infra.kafka import local, tansu
from infra.kafka.client import KafkaQueue
from infra.ledger_store import postgres_ledger
from infra.migrate import upgrade
from infra.queue.base import MessageQueue, PipelineOptions
from infra.queue.memory import InProcessQueue
from infra.settings import Settings
from infra.storage import LocalStorage

QUEUES = ("kafka-0.9", "tansu", "memory")
USERS = 50


def _png(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 40)).save(buffer, "PNG")
    return buffer.getvalue()


class NoopGenerator(Generator):
    """Generates nothing: one 1x1 PNG made once (the pipeline's cost, not the model's)."""

    info = OFFLINE_INFO

    def __init__(self) -> None:
        self.output = GeneratedOutput(_png(1), "image/png", 1, 1)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        return GenerationResult((self.output,), "noop", {"total": 0.0})


@dataclass
class Row:
    queue: str
    api: str
    jobs: int
    workers: int
    join_s: float
    total_s: float
    jobs_per_s: float
    steady_jobs_per_s: float


@contextlib.contextmanager
def _broker(name: str, root: Path) -> Iterator[MessageQueue]:
    """The queue ``name``: a broker of its own (stopped at the end), or the in-process one."""
    if name == "memory":
        yield InProcessQueue()
        return
    started = local.start(root / "kafka") if name == "kafka-0.9" else tansu.start(root / "tansu")
    try:
        yield KafkaQueue(started.bootstrap)  # the API version detected
    finally:
        started.stop()


def _api(pipeline: Pipeline) -> str:
    """The API version the relay's producer spoke (detected), or ``-`` off Kafka."""
    publisher = pipeline.relay.projection.publisher if pipeline.relay else None
    version = getattr(publisher, "api_version", None)
    if version is None:
        return "-"
    extras = [name for name in ("idempotent", "carries_headers") if getattr(publisher, name, False)]
    return ".".join(map(str, version)) + (f" ({', '.join(extras)})" if extras else "")


def _seed(url: str, storage: LocalStorage, jobs: int) -> None:
    """``jobs`` jobs reserved and requested in the ledger, over ``USERS`` users."""
    storage.put("assets/model.png", _png(64), "image/png")
    storage.put("products/top.png", _png(64), "image/png")
    request = {
        "project_id": str(uuid.uuid4()),
        "inputs": {
            "model": "assets/model.png",
            "background": None,
            "garments": [{"key": "products/top.png", "category": "top", "side": "front"}],
        },
        "options": {"width": 64, "height": 64, "seed": 1},
    }
    ledger = postgres_ledger(Settings(_env_file=None), url)  # type: ignore[call-arg]
    try:
        users = [uuid.uuid4() for _ in range(min(USERS, jobs))]
        for user in users:
            ledger.open_account(user)
            ledger.grant(user, "bench", credits=jobs)
        for n in range(jobs):
            ledger.request_job(users[n % len(users)], uuid.uuid4(), "image", request)
    finally:
        ledger.close()


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout:g} s")
        time.sleep(0.01)


def run_one(
    name: str, url: str, root: Path, jobs: int, workers: int, timeout: float, session_ms: int | None = None
) -> Row:
    storage = LocalStorage(root / "files", b"bench-secret")
    _seed(url, storage, jobs)
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    groups: dict[str, Any] = {}
    if session_ms is not None:
        groups["kafka_session_timeout_ms"] = session_ms
        groups["kafka_heartbeat_interval_ms"] = max(100, session_ms // 4)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_topic_prefix=prefix,
        worker_group=f"{prefix}-worker",
        ingestor_group=f"{prefix}-ingestor",
        **groups,
    )
    ledger = postgres_ledger(settings, url)
    try:
        with _broker(name, root) as queue:
            pipeline = Pipeline.build(
                settings,
                url,
                ledger,
                queue=queue,
                options=PipelineOptions.from_settings(settings),
                storage=storage,
                generator=NoopGenerator(),
                workers=workers,
                sweeper=False,
            )
            assert pipeline.ingestor is not None
            applied = pipeline.ingestor.loop.outcomes
            start = time.monotonic()
            pipeline.start()
            try:
                _wait(lambda: applied["applied"] > 0, timeout, f"{name}: the first result")
                first = time.monotonic()
                _wait(lambda: applied["applied"] >= jobs, timeout, f"{name}: {jobs} results")
                end = time.monotonic()
                api = _api(pipeline)
            finally:
                pipeline.stop()
    finally:
        ledger.close()
    steady = (jobs - 1) / (end - first) if end > first else float("nan")
    return Row(name, api, jobs, workers, first - start, end - start, jobs / (end - start), steady)


@contextlib.contextmanager
def _server(database_url: str | None, root: Path) -> Iterator[str]:
    if database_url:
        yield database_url
        return
    data_dir = root / "pg"
    data_dir.mkdir(parents=True)
    data_dir.chmod(0o755)  # pgserver runs PostgreSQL as its own user when we are root
    try:
        yield embedded_postgres_url(data_dir)
    finally:
        stop_embedded_postgres(data_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2, help="worker threads (members of the group)")
    parser.add_argument("--brokers", default=",".join(QUEUES), help=f"comma-separated, of {QUEUES}")
    parser.add_argument("--database-url", help="a PostgreSQL server (its databases are made here)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per queue")
    parser.add_argument(
        "--session-timeout-ms",
        type=int,
        help="the consumers' session timeout (default: the setting's, 10 s; Tansu's joins take half)",
    )
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.brokers.split(",") if n.strip()]
    if not names or set(names) - set(QUEUES):
        parser.error(f"--brokers: choose among {QUEUES}")
    root = Path(tempfile.mkdtemp(prefix="vto-pipeline-bench-"))
    rows: list[Row] = []
    try:
        with _server(args.database_url, root) as server:
            template = f"vto_pipeline_bench_{uuid.uuid4().hex[:8]}"
            databases = [template]
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {template}")
            try:
                upgrade(with_dbname(server, template))
                for name in names:
                    database = f"{template}_{name.replace('-', '_').replace('.', '_')}"
                    with psycopg.connect(server, autocommit=True) as conn:
                        conn.execute(f"CREATE DATABASE {database} TEMPLATE {template}")
                    databases.append(database)
                    row = run_one(
                        name,
                        with_dbname(server, database),
                        root / name,
                        args.jobs,
                        args.workers,
                        args.timeout,
                    )
                    rows.append(row)
                    print(f"{name}: {row.jobs_per_s:.1f} jobs/s", flush=True)
            finally:
                with psycopg.connect(server, autocommit=True) as conn:
                    for database in reversed(databases):
                        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _print(rows)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


def _print(rows: list[Row]) -> None:
    header = f"{'queue':<10} {'API':<36} {'jobs':>6} {'workers':>7} {'join_s':>7} {'total_s':>8}"
    print(f"{header} {'jobs/s':>8} {'steady jobs/s':>14}")
    for r in rows:
        print(
            f"{r.queue:<10} {r.api:<36} {r.jobs:>6} {r.workers:>7} {r.join_s:>7.2f} {r.total_s:>8.2f} "
            f"{r.jobs_per_s:>8.1f} {r.steady_jobs_per_s:>14.1f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
