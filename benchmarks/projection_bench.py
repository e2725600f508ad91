"""Projection and audit figures on PostgreSQL: audit/replay throughput (events/s) over
generated histories, rebuild (``vto ledger rebuild``: both projections, from scratch) and
runner catch-up throughput, and projection lag (p50, p99) while events are appended at a
steady rate.

    uv run python benchmarks/projection_bench.py [--events 100000 1000000] [--workers N]
        [--rate 500] [--seconds 20] [--no-lag]

Targets (issue 10): the audit at >= 100,000 events/s and a rebuild at >= 50,000 events/s over
1,000,000 events; (issue 19) the runners' catch-up at >= 50,000 events/s. The catch-up is
measured three times: ``Projector.catch_up()`` (the runners taking turns in this thread,
batch by batch), and a started projector (``vto projector``) on the whole log, batch by batch
and as configured (far behind: it rebuilds, ``Projector.rebuild_if_far_behind``). ``--workers``: the
audit's and the rebuild's worker processes (default: one per CPU, at most 4, from 200,000
events).

CPU: each figure's CPU seconds are this process's (and its finished workers'), plus, on the
embedded PostgreSQL, the database server's (every process of it, those that ended included);
from them, the CPU a catch-up costs an event and the most events/s the machine's CPUs could
give it however it were spread over them (CPUs / CPU per event).

Uses ``VTO_DATABASE_URL`` (a scratch database is created beside it; its server's CPU is not
counted) or an embedded PostgreSQL in a temporary directory."""

from __future__ import annotations

import argparse
import bisect
import os
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from benchmarks.harness import tree_cpu_seconds
from infra.database import embedded_postgres_pid, embedded_postgres_url, stop_embedded_postgres, with_dbname
from infra.ledger_store import postgres_ledger
from infra.migrate import upgrade
from infra.settings import Settings
from projections.audit import audit
from projections.rebuild import rebuild
from projections.registry import all_projections
from projections.runner import Projector
from tests.projections.history import random_history


def scratch_db(server: str, name: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    url = with_dbname(server, name)
    upgrade(url)
    return url


AUDIT_TARGET = 100_000  # events/s
REBUILD_TARGET = 50_000  # events/s
CATCH_UP_TARGET = 50_000  # events/s (issue 19)


@dataclass(frozen=True)
class Spent:
    """What a step cost: wall seconds, this process's CPU seconds (its finished workers'
    included) and the database server's (None when it is not the embedded one)."""

    seconds: float
    cpu: float
    server_cpu: float | None

    def line(self, events: int) -> str:
        """``{seconds} s, {cpu} CPU-s`` and, with the server's CPU, the whole CPU per event and
        the ceiling it sets on this machine's CPUs."""
        if self.server_cpu is None:
            return f"{self.seconds:.1f} s, {self.cpu:.1f} CPU-s"
        total = self.cpu + self.server_cpu
        per_event = total / events
        cpus = os.cpu_count() or 1
        return (
            f"{self.seconds:.1f} s, {self.cpu:.1f} + {self.server_cpu:.1f} CPU-s (ours + the database's): "
            f"{per_event * 1e6:.0f} us of CPU an event, "
            f"at most {cpus / per_event:,.0f} events/s on {cpus} CPUs"
        )


class Meter:
    """Reads the CPU of this process and, when ``server_pid`` is given, of the database server."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def start(self) -> tuple[float, float, float | None]:
        return time.monotonic(), _cpu(), self._server()

    def since(self, start: tuple[float, float, float | None]) -> Spent:
        began, cpu, server = start
        now = self._server()
        return Spent(
            time.monotonic() - began,
            _cpu() - cpu,
            None if now is None or server is None else now - server,
        )

    def _server(self) -> float | None:
        return None if self.server_pid is None else tree_cpu_seconds([self.server_pid])


def audit_figures(
    server: str, settings: Settings, events: int, workers: int | None, meter: Meter | None = None
) -> None:
    """The replay figures over a generated history of ``events``; ``meter``: what counts the
    CPU (by default, this process's only)."""
    meter = meter or Meter(None)
    url = scratch_db(server, f"vto_bench_audit_{events}")
    app = postgres_ledger(settings, url)
    started = time.monotonic()
    random_history(app, users=max(100, events // 50), events=events, seed=1)
    generated = time.monotonic() - started
    total = app.position() or 0
    app.close()
    start = meter.start()
    Projector.configured(url, settings).catch_up()
    projecting = meter.since(start)
    live = _live_catch_up(url, settings.model_copy(update={"projection_rebuild_from": 0}), total, meter)
    rebuilt = _live_catch_up(url, settings, total, meter)
    start = meter.start()
    rebuild(url, all_projections(), workers=workers)
    rebuilding = meter.since(start)
    start = meter.start()
    report = audit(url, workers=workers)
    auditing = meter.since(start)
    print(f"{events:>9,} events ({total:,} in the log), generated in {generated:.1f} s")
    print(
        f"  runners' catch-up (both projections, batch by batch) {total / projecting.seconds:,.0f} events/s "
        f"({projecting.line(total)})"
    )
    print(
        f"  a started projector from scratch, batch by batch {total / live.seconds:,.0f} events/s "
        f"({live.line(total)})"
    )
    print(
        "  a started projector from scratch (far behind: it rebuilds) "
        f"{total / rebuilt.seconds:,.0f} events/s "
        f"({rebuilt.line(total)}); target {CATCH_UP_TARGET:,}: "
        f"{'met' if total / rebuilt.seconds >= CATCH_UP_TARGET else 'NOT met'}"
    )
    for label, rate, spent, target in (
        ("rebuild (both projections)", total / rebuilding.seconds, rebuilding, REBUILD_TARGET),
        ("audit", report.rate, auditing, AUDIT_TARGET),
    ):
        print(
            f"  {label:<27} {rate:>9,.0f} events/s ({spent.line(total)}); target {target:,}: "
            f"{'met' if rate >= target else 'NOT met'}"
        )
    if not report.ok:
        print("\n".join(report.lines()))


def _live_catch_up(url: str, settings: Settings, head: int, meter: Meter) -> Spent:
    """The read models emptied and their positions reset, then ``vto projector``'s runners
    (as the settings say: by a rebuild from ``projection_rebuild_from`` events behind) started
    on the whole log: what it cost until both have applied it (the projector's stop after that
    is not counted)."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [t for p in all_projections() for t in p.tables]
        conn.execute(f"TRUNCATE {', '.join(tables)}")
        conn.execute("UPDATE projection_tracking SET position = 0")
        conn.execute("VACUUM ANALYZE")
    start = meter.start()
    projector = Projector.configured(url, settings)
    projector.rebuild_if_far_behind()  # as ``vto projector`` does, before its threads start
    with projector:
        if not projector.wait_for(head, timeout=3600):
            raise RuntimeError("the live runners did not catch up within an hour")
        return meter.since(start)


def _cpu() -> float:
    """CPU seconds of this process and of its finished child processes (the workers)."""
    own = os.times()
    return own.user + own.system + own.children_user + own.children_system


def lag_figures(server: str, settings: Settings, rate: int, seconds: float) -> None:
    url = scratch_db(server, "vto_bench_lag")
    app = postgres_ledger(settings, url)
    committed: dict[int, float] = {}
    lags: list[float] = []
    lock = threading.Lock()
    pending: list[int] = []

    with Projector(url, poll_interval=1.0) as projector:
        runner = projector.runner("points")

        def seen(position: int) -> None:
            now = time.monotonic()
            with lock:
                while pending and pending[0] <= position:
                    lags.append(now - committed.pop(pending.pop(0)))

        runner.on_commit.append(seen)
        from uuid import uuid4

        users = [uuid4() for _ in range(50)]
        for user in users:
            app.open_account(user)
        threads = 4  # one command at a time per thread; several threads reach the rate
        interval = threads / rate
        deadline = time.monotonic() + seconds
        counts = [0] * threads

        def append(worker: int) -> None:
            next_at = time.monotonic()
            i = worker
            while time.monotonic() < deadline:
                result = app.grant_credits(users[i % len(users)], 1, "bench")  # one event
                if result.position is not None:
                    with lock:
                        committed[result.position] = time.monotonic()
                        bisect.insort(pending, result.position)
                counts[worker] += 1
                i += threads
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

        workers = [threading.Thread(target=append, args=(w,)) for w in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        projector.wait_for(app.position(), timeout=30)
    app.close()
    achieved = sum(counts) / seconds
    q = statistics.quantiles(lags, n=100)
    print(
        f"lag while appending {achieved:,.0f} events/s for {seconds:.0f} s ({len(lags)} events): "
        f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=None, help="audit and rebuild processes")
    parser.add_argument("--no-lag", action="store_true", help="skip the lag figures")
    args = parser.parse_args()
    settings = Settings(_env_file=None, database_url=None)  # type: ignore[call-arg]
    external = os.environ.get("VTO_DATABASE_URL")
    data_dir = Path(tempfile.mkdtemp(prefix="vto-bench-pg-"))
    data_dir.chmod(0o755)
    server = external or embedded_postgres_url(data_dir)
    try:
        if not args.no_lag:
            lag_figures(server, settings, args.rate, args.seconds)
        print(f"{os.cpu_count()} CPUs")
        meter = Meter(None if external else embedded_postgres_pid(data_dir))
        for events in args.events:
            audit_figures(server, settings, events, args.workers, meter)
    finally:
        if not external:
            stop_embedded_postgres(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
