"""The job order's read on PostgreSQL's own plan cache mode (``auto``) against the API's
(``VTO_DB_PLAN_CACHE_MODE``, ``force_generic_plan``), as the users' ledger streams grow.

    uv run --frozen python benchmarks/plan_cache_bench.py [--users 20] [--events 10 100 1000] [--calls 2000]

Seeds ``--users`` users (a project, a garment and a model photo each, as
``benchmarks/jobs_vs_prd.py`` does), then, for each step of ``--events``, grants each user
credits until their stream holds that many events, runs ``ANALYZE`` (what autovacuum does as
a table grows), and makes the job order's read (``load_job_inputs``, the API's function, with
the version the process holds: no event to read) ``--calls`` times on one connection of an
engine made as the API makes its own (``infra.orm.make_engine``), in each mode, alternately,
three times; then the same read of an account the process does not hold (its newest
snapshot and the events after it: a restart, another replica's user), a tenth as many
calls. Prints, per mode: the server's CPU per call (the connection's backend process, when
it runs on this machine: the embedded PostgreSQL or a local one), the wall time per call, and
how many of the calls ran a generic or a custom plan (``pg_prepared_statements``).

Uses ``VTO_DATABASE_URL`` (a scratch database is created beside it) or an embedded PostgreSQL
in a temporary directory."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import text
from sqlalchemy.orm import Session

from benchmarks.harness import Seeded, benchmark_server, seed, tree_cpu_seconds
from benchmarks.projection_bench import scratch_db
from command_api.catalog.job_inputs import load_job_inputs
from infra.ledger_store import postgres_ledger
from infra.orm import make_engine
from infra.settings import Settings
from ledger.store import FROM_SNAPSHOT

MODES = ("auto", Settings().db_plan_cache_mode)  # the server's default, then the API's
ROUNDS = 3


@dataclass(frozen=True)
class Calls:
    """One mode's run: server CPU and wall ms per call (None when the server is not local),
    and how many calls ran a generic and a custom plan."""

    server_ms: float | None
    wall_ms: float
    generic: int
    custom: int


def backend_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a server process on this machine (``tree_cpu_seconds``);
    None when there is no such process here."""
    return tree_cpu_seconds([pid]) if psutil.pid_exists(pid) else None


def grow_streams(url: str, users: list[Seeded], events: int) -> None:
    """Grant each user one credit at a time until their stream holds ``events`` events."""
    ledger = postgres_ledger(Settings(), url)
    try:
        for user in users:
            for _ in range(events - ledger.account(user.user_id).version):
                ledger.grant_credits(user.user_id, 1, "plan cache bench")
    finally:
        ledger.close()


def run_calls(url: str, mode: str, users: list[Seeded], calls: int, whole: bool = False) -> Calls:
    """``calls`` job order reads, round-robin over ``users``, on one connection in ``mode``:
    after the version the process holds (nothing to read), or, ``whole``, of an account the
    process does not hold (``FROM_SNAPSHOT``: the newest snapshot and the events after it)."""
    engine = make_engine(url, 1, plan_cache_mode=mode)
    ledger = postgres_ledger(Settings(), url)
    try:
        args = [
            (
                u.user_id,
                u.body["project_id"],
                u.body["product_ids"],
                u.body["model_asset_id"],
                ledger.account(u.user_id).version,
            )
            for u in users
        ]
        with Session(engine) as session:
            pid = int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())

            def read(i: int) -> None:
                user, project, products, model, version = args[i % len(args)]
                after = FROM_SNAPSHOT if whole else version
                got = load_job_inputs(session, user, project, products, model, stream_after=after)
                start = got["snapshot"][0] if got["snapshot"] is not None else after
                assert start + len(got["stream"]) == version, "the account as stored"

            for i in range(10):  # past psycopg's prepare threshold
                read(i)
            before = session.execute(text(_PLANS)).one()
            cpu, started = backend_cpu_seconds(pid), time.perf_counter()
            for i in range(calls):
                read(i)
            wall = time.perf_counter() - started
            after_cpu = backend_cpu_seconds(pid)
            after = session.execute(text(_PLANS)).one()
    finally:
        ledger.close()
        engine.dispose()
    server = None if cpu is None or after_cpu is None else (after_cpu - cpu) / calls * 1e3
    return Calls(server, wall / calls * 1e3, after[0] - before[0], after[1] - before[1])


_PLANS = (
    "SELECT coalesce(sum(generic_plans), 0), coalesce(sum(custom_plans), 0) FROM pg_prepared_statements "
    "WHERE statement LIKE '%news_versions%' AND statement NOT LIKE '%pg_prepared_statements%'"
)


def figures(
    server: str, users: int, steps: list[int], calls: int
) -> list[tuple[int, bool, dict[str, list[Calls]]]]:
    url = scratch_db(server, "vto_bench_plan_cache")
    data_dir = Path(tempfile.mkdtemp(prefix="vto-bench-plan-cache-"))
    try:
        seeded = seed(url, data_dir, users, credits=1)
        results = []
        for events in steps:
            grow_streams(url, seeded, events)
            engine = make_engine(url, 1)
            with engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
            engine.dispose()
            for whole in (False, True):
                runs: dict[str, list[Calls]] = {mode: [] for mode in MODES}
                for _ in range(ROUNDS):
                    for mode in MODES:
                        runs[mode].append(
                            run_calls(url, mode, seeded, calls // 10 if whole else calls, whole)
                        )
                results.append((events, whole, runs))
        return results
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def median(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--events", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with benchmark_server() as server:
        results = figures(server, args.users, sorted(args.events), args.calls)
    auto, ours = MODES
    print(
        f"{os.cpu_count()} CPUs; {args.users} users; median of {ROUNDS} runs of {args.calls} calls a mode "
        f"({args.calls // 10} from the snapshot)"
    )
    print(
        f"| events a user | read | {auto}: server µs/call | wall µs | plans generic/custom "
        f"| {ours}: server µs/call | wall µs | plans generic/custom | server CPU {ours} / {auto} |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for events, whole, runs in results:
        cells = []
        for mode in MODES:
            server_ms = median([r.server_ms for r in runs[mode]])
            wall = median([r.wall_ms for r in runs[mode]])
            generic, custom = sum(r.generic for r in runs[mode]), sum(r.custom for r in runs[mode])
            shown = "n/a" if server_ms is None else f"{server_ms * 1e3:.0f}"
            cells.append((server_ms, f"{shown} | {wall * 1e3:.0f} | {generic}/{custom}"))
        base, ours_ms = cells[0][0], cells[1][0]
        # n/a: a server not on this machine, or a run shorter than a tick of its CPU clock
        ratio = "n/a" if base is None or ours_ms is None or base == 0 else f"{ours_ms / base:.2f}"
        read = "from the snapshot" if whole else "after the version held"
        print(f"| {events} | {read} | {cells[0][1]} | {cells[1][1]} | {ratio} |")


if __name__ == "__main__":
    main()
