"""Statements and usage reports over a year of a busy seller's history (issue 23).

    uv run python benchmarks/statement_bench.py [--lines 100000] [--others 1000] [--repeat 7]

A seller with ``--lines`` usage lines spread over a year (grants paid and promotional, jobs
charged to credits and LookBook tickets, settled or refunded, expiries, adjustments), beside
``--others`` accounts with 100 lines each, written straight into ``point_usage`` and
``point_balance`` (the read models these reads use; their balances chain as the projection's
do). Timed through the API in process (FastAPI's TestClient: routing, the caller's token,
JSON or CSV included), each the median of ``--repeat`` runs after one warm-up:

- ``GET /points/statement`` over the whole year, first page (200 lines);
- the same with ``Accept: text/csv``: every line of the year, streamed; and the same CSV
  taken from the service without HTTP (what the server does: the balances, the ``COPY``, the
  chunks; the difference is the test client's cost of moving 12 MB through ASGI);
- ``GET /admin/usage`` over the year, ``group_by=day`` and ``group_by=user``.

Target: each under 200 ms. Uses ``VTO_DATABASE_URL`` (a scratch database is created beside
it) or an embedded PostgreSQL in a temporary directory."""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from fastapi.testclient import TestClient
from pydantic import SecretStr

from benchmarks.harness import benchmark_server
from benchmarks.projection_bench import scratch_db
from command_api.app import create_app
from command_api.billing.service import statement_csv
from command_api.services import build_services
from infra.settings import Settings
from tests.api_factories import make_user

TARGET_MS = 200.0
CSV = {"Accept": "text/csv"}
YEAR_START = datetime(2025, 12, 1, tzinfo=UTC)
YEAR = timedelta(days=365)
FIRST_POSITION = 1_000_000_000  # beyond the log's notification ids: no clash with real lines
COLUMNS = (
    "position",
    "user_id",
    "job_id",
    "type",
    "source",
    "amount",
    "balance_after",
    "reason",
    "created_at",
    "category",
)


def history(
    user: uuid.UUID, lines: int, rng: random.Random, positions: Iterator[int]
) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    """A user's lines over the year, their balances chained; and the balances at the end."""
    held = {"credit": 0, "ticket:lookbook": 0}
    rows: list[tuple[Any, ...]] = []
    step = YEAR / lines

    def line(
        job: uuid.UUID | None, kind: str, source: str, amount: int, reason: str, cat: str | None
    ) -> None:
        held[source] += amount
        at = YEAR_START + step * len(rows)
        rows.append((next(positions), user, job, kind, source, amount, held[source], reason, at, cat))

    while len(rows) < lines:
        if held["credit"] < 5:
            category = rng.choice(("paid", "promotional"))
            line(None, "grant", "credit", 200, "top-up", category)
            continue
        if held["ticket:lookbook"] < 1 and rng.random() < 0.3:
            line(None, "grant", "ticket:lookbook", 20, "pack", "paid")
            continue
        r = rng.random()
        if r < 0.01:
            line(None, "adjustment", "credit", -1, "correction", None)
            continue
        if r < 0.02:
            line(None, "expiry", "credit", -min(3, held["credit"]), "lot 1 expired", None)
            continue
        source = "ticket:lookbook" if held["ticket:lookbook"] > 0 and r < 0.5 else "credit"
        job = uuid.uuid4()
        line(job, "reservation", source, -1, "image job", None)
        if rng.random() < 0.9:
            line(job, "settlement", source, 0, "job succeeded", None)
        else:
            line(job, "refund", source, 1, "failed: boom", None)
    return rows[:lines], held


def seed(url: str, seller: uuid.UUID, lines: int, others: int) -> None:
    rng = random.Random(23)
    positions = iter(range(FIRST_POSITION, FIRST_POSITION + 10 * (lines + 100 * others)))
    users = [(seller, lines)] + [(uuid.uuid4(), 100) for _ in range(others)]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY point_usage ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            balances = {}
            for user, count in users:
                rows, held = history(user, count, rng, positions)
                balances[user] = held
                for row in rows:
                    copy.write_row(row)
        for user, held in balances.items():
            tickets = {"lookbook": held["ticket:lookbook"]}
            cur.execute(
                "INSERT INTO point_balance (user_id, credits, tickets, position, updated_at) "
                "VALUES (%s, %s, %s::jsonb, 0, now()) ON CONFLICT (user_id) DO UPDATE SET "
                "credits = EXCLUDED.credits, tickets = EXCLUDED.tickets",
                (user, held["credit"], psycopg.types.json.Jsonb(tickets)),
            )
        conn.commit()
        conn.execute("ANALYZE point_usage")
        conn.execute("ANALYZE point_balance")
        conn.commit()


def timed(call: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(median ms, min ms, the last answer) over ``repeat`` runs after one warm-up."""
    last = call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        last = call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), min(times), last


def figures(server: str, lines: int, others: int, repeat: int) -> list[tuple[str, float, float, str]]:
    url = scratch_db(server, "vto_bench_statement")
    secret = SecretStr("b" * 40)
    settings = Settings(_env_file=None, data_dir=Path(tempfile.mkdtemp()), jwt_secret=secret)  # type: ignore[call-arg]
    services = build_services(settings, url, migrate=False)
    try:
        seller, admin = make_user(services), make_user(services, admin=True)
        started = time.perf_counter()
        seed(url, seller.id, lines, others)
        print(
            f"seeded {lines:,} lines of one seller and {others * 100:,} of {others:,} others "
            f"in {time.perf_counter() - started:.1f} s"
        )
        period = f"from={quote(YEAR_START.isoformat())}&to={quote((YEAR_START + YEAR).isoformat())}"
        results = []
        with TestClient(create_app(services)) as client:

            def get(path: str, headers: dict[str, str]) -> Any:
                response = client.get(path, headers=headers)
                assert response.status_code == 200, response.text
                return response

            cases: list[tuple[str, Callable[[], Any], Callable[[Any], str]]] = [
                (
                    "statement, first page (200 lines)",
                    lambda: get(f"/api/v1/points/statement?{period}", seller.headers),
                    lambda r: f"{len(r.json()['items'])} lines, next_cursor {bool(r.json()['next_cursor'])}",
                ),
                (
                    "statement, full CSV",
                    lambda: get(
                        f"/api/v1/points/statement?{period}", {**seller.headers, "Accept": "text/csv"}
                    ),
                    lambda r: f"{r.text.count(chr(10)):,} rows, {len(r.content) / 1e6:.1f} MB",
                ),
                (
                    "admin usage by day",
                    lambda: get(f"/api/v1/admin/usage?{period}&group_by=day", admin.headers),
                    lambda r: f"{len(r.json()['rows'])} rows",
                ),
                (
                    "admin usage by user",
                    lambda: get(f"/api/v1/admin/usage?{period}&group_by=user", admin.headers),
                    lambda r: f"{len(r.json()['rows'])} rows",
                ),
            ]
            start, end = YEAR_START, YEAR_START + YEAR

            def csv_without_http() -> int:
                with services.sessions() as session:
                    chunks = statement_csv(
                        session, services.engine, seller.id, ["lookbook", "video"], start, end
                    )
                    return sum(len(chunk) for chunk in chunks)

            cases.insert(
                2,
                (
                    "statement, full CSV, without HTTP",
                    csv_without_http,
                    lambda n: f"{n / 1e6:.1f} MB (the service's chunks, no ASGI or client)",
                ),
            )
            for name, call, shown in cases:
                median, best, last = timed(call, repeat)
                results.append((name, median, best, shown(last)))
        return results
    finally:
        services.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--others", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with benchmark_server() as server:
        results = figures(server, args.lines, args.others, args.repeat)
    print(f"{os.cpu_count()} CPUs; median (min) of {args.repeat} runs; target < {TARGET_MS:.0f} ms each")
    for name, median, best, shown in results:
        verdict = "ok" if median < TARGET_MS else "OVER"
        print(f"  {name:<36} {median:8.1f} ms ({best:.1f})  {verdict}  [{shown}]")


if __name__ == "__main__":
    main()
