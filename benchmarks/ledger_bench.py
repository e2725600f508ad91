"""Ledger benchmark on PostgreSQL: reservations per second and account load times.

    uv run python benchmarks/ledger_bench.py [--database-url URL] [--scale 1.0] [--events 1000000]

Uses VTO_DATABASE_URL / --database-url, or starts an embedded PostgreSQL in a temporary
directory. Every scenario runs in a fresh, migrated database. Prints one line per figure.

Scenarios: one user serially; 100 users from 8 threads; one hot user from 8 threads (with the
number of optimistic-concurrency retries); the same two threaded runs with eventsourcing's
table lock removed (to see whether the lock is the limit); loading an account of 10,000
events with and without its snapshot. With ``--events N``: the replay figures of
``projection_bench`` over a generated history of N events: ``vto ledger rebuild`` and
``vto ledger audit`` in events/s, beside their targets (50,000 and 100,000 events/s).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
from eventsourcing.application import Repository
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import get_topic

from benchmarks.projection_bench import audit_figures
from infra.database import embedded_postgres_url, stop_embedded_postgres, with_dbname
from infra.ledger_store import ledger_options, postgres_env
from infra.migrate import upgrade
from infra.settings import Settings
from ledger.application import LedgerApplication
from ledger.errors import InsufficientEntitlement


class UnlockedRecorder(PostgresApplicationRecorder):
    """Benchmark only: the recorder without its per-insert ``LOCK TABLE``. Unsafe for
    readers of the notification log; used to measure what the lock costs."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lock_table_statements = []


class Bench:
    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.settings = Settings()
        self._n = 0

    def fresh_ledger(self, unlocked: bool = False, pool: int = 10) -> LedgerApplication:
        self._n += 1
        name = f"ledger_bench_{os.getpid()}_{self._n}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
        url = with_dbname(self.server_url, name)
        upgrade(url)
        env = postgres_env(url, pool)
        if unlocked:
            env["APPLICATION_RECORDER_TOPIC"] = get_topic(UnlockedRecorder)
        return LedgerApplication(env=env, options=ledger_options(self.settings))

    def reopen(self, ledger: LedgerApplication, pool: int) -> LedgerApplication:
        """Another instance on the same database, as another API process would be."""
        return LedgerApplication(env=dict(ledger.env), options=ledger_options(self.settings))


def reserve_all(
    ledgers: list[LedgerApplication], users: list[UUID], per_user: int, threads: int
) -> tuple[float, int, int]:
    """Reserve ``per_user`` image jobs for each user from ``threads`` threads, the requests
    shuffled and spread round-robin over the ledger instances (as over API processes).
    Returns (seconds, reservations, rejections)."""
    work = [(u, ledgers[i % len(ledgers)]) for i, u in enumerate(u for u in users for _ in range(per_user))]
    random.Random(7).shuffle(work)
    rejected = 0
    lock = threading.Lock()

    def one(item: tuple[UUID, LedgerApplication]) -> None:
        nonlocal rejected
        user, ledger = item
        try:
            ledger.request_job(user, uuid4(), "image", {"bench": True})
        except InsufficientEntitlement:
            with lock:
                rejected += 1

    start = time.perf_counter()
    if threads == 1:
        for item in work:
            one(item)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, work))
    return time.perf_counter() - start, len(work) - rejected, rejected


def scenario(
    bench: Bench,
    label: str,
    users: int,
    per_user: int,
    threads: int,
    unlocked: bool = False,
    instances: int = 1,
) -> float:
    ledger = bench.fresh_ledger(unlocked=unlocked, pool=max(threads, 2))
    others = [bench.reopen(ledger, threads) for _ in range(instances - 1)]
    ids = [uuid4() for _ in range(users)]
    for user in ids:
        ledger.grant_credits(user, per_user * ledger.policy.cost("image"), "bench")
    seconds, done, rejected = reserve_all([ledger, *others], ids, per_user, threads)
    rate = done / seconds
    apps = [ledger, *others]
    conflicts = sum(a.stats.conflicts for a in apps)
    exhausted = sum(a.stats.exhausted for a in apps)
    print(
        f"{label:<56} {rate:8.0f} reservations/s  ({done} in {seconds:.2f} s, {rejected} rejected, "
        f"{conflicts} conflict retries, {exhausted} gave up)"
    )
    for app in apps:
        app.close()
    return rate


def timed(call: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def load_times(bench: Bench, events: int) -> None:
    ledger = bench.fresh_ledger()
    user = uuid4()
    ledger.open_account(user)
    account = ledger.account(user)
    now = datetime.now(UTC)
    while account.version < events:
        for _ in range(min(500, events - account.version)):
            account.grant_credits(1, "bench", now)
        ledger.save(account)
    plain = Repository(event_store=ledger.events, snapshot_store=None)
    with_snapshot = timed(lambda: ledger.repository.get(user), 20)
    without = timed(lambda: plain.get(user), 5)
    for label, ms in (("with snapshot", with_snapshot), ("without snapshot", without)):
        print(f"{f'load account of {events} events, {label}':<52} {ms:8.1f} ms (median)")
    ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=os.environ.get("VTO_DATABASE_URL"))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the number of operations")
    parser.add_argument(
        "--events", type=int, nargs="*", default=[], help="also rebuild and audit histories of these sizes"
    )
    parser.add_argument("--workers", type=int, default=None, help="the audit's and the rebuild's processes")
    args = parser.parse_args()
    data_dir: Path | None = None
    url = args.database_url
    if not url:
        data_dir = Path(tempfile.mkdtemp(prefix="vto-bench-pg-"))
        data_dir.chmod(0o755)
        url = embedded_postgres_url(data_dir)
    bench = Bench(url)
    n = max(1, int(args.scale * 2000))
    with psycopg.connect(url) as conn:
        version = conn.execute("show server_version").fetchone()
    print(f"PostgreSQL {version[0] if version else '?'}, {os.cpu_count()} CPUs")
    try:
        per_user = max(1, n // 100) * 2
        scenario(bench, "one user, serially", 1, n, 1)
        scenario(bench, "100 users, 8 threads", 100, per_user, 8)
        scenario(bench, "one hot user, 8 threads", 1, n, 8)
        scenario(bench, "one hot user, 8 threads over 2 ledger instances", 1, n, 8, instances=2)
        scenario(bench, "100 users, 8 threads, no table lock", 100, per_user, 8, unlocked=True)
        scenario(bench, "one hot user, 8 threads over 2 instances, no table lock", 1, n, 8, True, 2)
        load_times(bench, 10_000)
        for events in args.events:
            audit_figures(url, Settings(_env_file=None, database_url=None), events, args.workers)  # type: ignore[call-arg]
    finally:
        if data_dir is not None:
            stop_embedded_postgres(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
