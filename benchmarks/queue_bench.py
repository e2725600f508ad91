"""The cost of a queued job's place in the queue (``queue_position``, ``eta_s``) at the back
of a long queue: the query ``GET /vto/jobs/{id}`` and the job list add for queued jobs
(``command_api/vto/repository.py`` QUEUE), timed on PostgreSQL.

    uv run python benchmarks/queue_bench.py [--queued 50000] [--running 50] [--finished 100000]

Fills ``vto_job`` with ``--queued`` queued jobs (``--running`` of them with a progress row,
as running jobs have) and ``--finished`` finished jobs with their progress rows (the history),
then times the query for the last queued job, for a page of 50 queued jobs (the list), and
checks the answer. Uses ``VTO_DATABASE_URL`` (a scratch database beside it) or an embedded
PostgreSQL in a temporary directory."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from command_api.vto import repository
from infra.database import embedded_postgres_url, stop_embedded_postgres, with_dbname
from infra.migrate import upgrade
from infra.orm import make_engine
from infra.settings import Settings

EXACT = 2**62  # a cap no queue reaches: every job ahead counted


def fill(url: str, queued: int, running: int, finished: int) -> list[tuple[uuid.UUID, datetime]]:
    """The jobs; returns the queued ones, oldest first."""
    now = datetime.now(UTC)
    start = now - timedelta(hours=2)
    user = uuid.uuid4()
    jobs: list[tuple[uuid.UUID, datetime]] = []
    done: list[tuple[uuid.UUID, datetime]] = []
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        columns = "job_id, user_id, kind, status, created_at, updated_at, position"
        with cur.copy(f"COPY vto_job ({columns}) FROM STDIN") as copy:
            for n in range(finished):
                at = start - timedelta(seconds=finished - n)
                done.append((uuid.uuid4(), at))
                copy.write_row((done[-1][0], user, "image", "succeeded", at, at, n))
            for n in range(queued):
                at = start + timedelta(milliseconds=n * 100)
                job = uuid.uuid4()
                jobs.append((job, at))
                copy.write_row((job, user, "image", "queued", at, at, finished + n))
        with cur.copy(
            "COPY job_progress (job_id, started_at, progress, updated_at, open) FROM STDIN"
        ) as copy:
            for job, at in done:  # closed by the sweeper
                copy.write_row((job, at, 1.0, at + timedelta(seconds=1), False))
            for job, _ in jobs[:running]:
                copy.write_row((job, now - timedelta(seconds=30), 0.5, now, True))
        conn.execute("VACUUM ANALYZE vto_job")
        conn.execute("VACUUM ANALYZE job_progress")
    return jobs


def timed(run: object, repeat: int) -> tuple[float, float]:
    """Median and p99 in ms of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()  # type: ignore[operator]
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queued", type=int, default=50_000)
    parser.add_argument("--running", type=int, default=50)
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--explain", action="store_true", help="print the plan of the one-job query")
    parser.add_argument(
        "--cap",
        type=int,
        default=Settings().queue_position_exact_max,
        help="jobs ahead counted exactly (VTO_QUEUE_POSITION_EXACT_MAX); the timings are also taken "
        "with the whole queue counted",
    )
    args = parser.parse_args()
    external = os.environ.get("VTO_DATABASE_URL")
    data_dir = Path(tempfile.mkdtemp(prefix="vto-queue-bench-"))
    data_dir.chmod(0o755)
    server = external or embedded_postgres_url(data_dir)
    try:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS vto_bench_queue WITH (FORCE)")
            conn.execute("CREATE DATABASE vto_bench_queue")
        url = with_dbname(server, "vto_bench_queue")
        upgrade(url)
        jobs = fill(url, args.queued, args.running, args.finished)
        engine = make_engine(url, 1)
        with engine.connect() as conn:
            last = jobs[-1:]
            page = jobs[-50:]
            answer = repository.queue_rows(conn, last, 600.0, EXACT)[last[0][0]]
            expected = args.queued - 1 - args.running
            assert answer[0] == expected, (answer, expected)
            capped = repository.queue_rows(conn, last, 600.0, args.cap)[last[0][0]]
            assert capped[2] is (expected + args.running < args.cap), capped
            assert [a for a, _, _ in repository.queue_rows(conn, page, 600.0, EXACT).values()] == list(
                range(expected - 49, expected + 1)
            )
            if args.explain:
                raw = conn.connection.driver_connection
                assert raw is not None
                sql = str(repository.QUEUE)
                for name in ("prev_ids", "prev_created", "ids", "created", "window", "cap"):
                    sql = sql.replace(f":{name}", f"%({name})s")
                params = {
                    "ids": [last[0][0]],
                    "created": [last[0][1]],
                    "prev_ids": [uuid.UUID(int=0)],
                    "prev_created": [datetime(1, 1, 1, tzinfo=UTC)],
                    "window": 600.0,
                    "cap": args.cap,
                }
                for line in raw.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params):
                    print(line[0])
            one = timed(lambda: repository.queue_rows(conn, last, 600.0, args.cap), args.repeat)
            rounds = max(args.repeat // 10, 5)
            fifty = timed(lambda: repository.queue_rows(conn, page, 600.0, args.cap), rounds)
            one_exact = timed(lambda: repository.queue_rows(conn, last, 600.0, EXACT), args.repeat)
        print(
            f"queue of {args.queued} ({args.running} running, {args.finished} finished before): "
            f"queue_position {answer[0]} for the last job"
        )
        print(f"one job (GET /vto/jobs/{{id}}), cap {args.cap}:  median {one[0]:.2f} ms, p99 {one[1]:.2f} ms")
        print(f"one job, the whole queue counted:  median {one_exact[0]:.2f} ms, p99 {one_exact[1]:.2f} ms")
        print(f"50 queued jobs (a list page): median {fifty[0]:.2f} ms, p99 {fifty[1]:.2f} ms")
    finally:
        if not external:
            stop_embedded_postgres(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
