"""Ledger benchmark on PostgreSQL: reservations per second and account load times.

    uv run python benchmarks/ledger_bench.py [--database-url URL] [--scale 1.0] [--events 1000000]
        [--open-jobs 2000 8000 20000 [--only-open-jobs]]

Uses VTO_DATABASE_URL / --database-url, or starts an embedded PostgreSQL in a temporary
directory. Every scenario runs in a fresh, migrated database. Prints one line per figure.

Scenarios: one user serially; 100 users from 8 threads; one hot user from 8 threads (with the
number of optimistic-concurrency retries); the same two threaded runs with eventsourcing's
table lock removed (to see whether the lock is the limit); loading an account of 10,000
events with and without its snapshot. With ``--events N``: the replay figures of
``projection_bench`` over a generated history of N events: ``vto ledger rebuild`` and
``vto ledger audit`` in events/s, beside their targets (50,000 and 100,000 events/s). With
``--open-jobs N ...``: what an account holding N open jobs (a seller whose orders wait in the
queue) costs at once, each time: loading it (snapshot and the events after it: after a
collision drops it, or in a process that does not hold it), copying it (``LedgerApplication.account``)
and taking and encoding its snapshot (every power of two times ``VTO_SNAPSHOT_INTERVAL`` events
that covers what it holds).
"""

from __future__ import annotations

import argparse
import copy
import functools
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

from benchmarks.projection_bench import Meter, audit_figures
from infra.database import embedded_postgres_pid, embedded_postgres_url, stop_embedded_postgres, with_dbname
from infra.ledger_store import ledger_options, postgres_env, postgres_ledger
from infra.migrate import upgrade
from infra.settings import Settings
from ledger.account import Account
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

    def fresh_url(self) -> str:
        """A new, migrated database on the server."""
        self._n += 1
        name = f"ledger_bench_{os.getpid()}_{self._n}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
        url = with_dbname(self.server_url, name)
        upgrade(url)
        return url

    def fresh_ledger(self, unlocked: bool = False, pool: int = 10) -> LedgerApplication:
        """The ledger on the reference store (``ledger.store``), on a new database."""
        env = postgres_env(self.fresh_url(), pool)
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


def open_job_costs(bench: Bench, sizes: list[int]) -> None:
    """One account ordering jobs that never finish; at each of ``sizes`` open jobs, the
    median of three: its load, its copy, its snapshot taken and encoded."""
    ledger = postgres_ledger(bench.settings, bench.fresh_url())  # as the service runs it
    user = uuid4()
    ledger.open_account(user)
    ledger.grant_credits(user, 10**9, "bench")
    snapshots = ledger.snapshots
    assert snapshots is not None

    def snapshot_of(account: Account) -> bytes:
        return bytes(snapshots.mapper.to_stored_event(Account.Snapshot.take(account)).state)

    opened = 0
    for size in sorted(sizes):
        while opened < size:
            ledger.request_job(user, uuid4(), "image", {"bench": True})
            opened += 1
        account: Account = ledger.repository.get(user)
        load = timed(functools.partial(ledger.repository.get, user), 3)
        copied = timed(functools.partial(copy.deepcopy, account), 3)
        snapshot = timed(functools.partial(snapshot_of, account), 3)
        size_mb = len(snapshot_of(account)) / 1e6
        label = f"account with {size:,} open jobs ({account.entries:,} entries, {size_mb:.1f} MB snapshot)"
        print(f"{label:<64} load {load:6.0f} ms, copy {copied:6.0f} ms, snapshot {snapshot:6.0f} ms, medians")
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
    parser.add_argument(
        "--open-jobs", type=int, nargs="*", default=[], help="also an account holding this many open jobs"
    )
    parser.add_argument("--only-open-jobs", action="store_true", help="skip the other scenarios")
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
        if args.open_jobs:
            open_job_costs(bench, args.open_jobs)
        if args.only_open_jobs:
            return
        per_user = max(1, n // 100) * 2
        scenario(bench, "one user, serially", 1, n, 1)
        scenario(bench, "100 users, 8 threads", 100, per_user, 8)
        scenario(bench, "one hot user, 8 threads", 1, n, 8)
        scenario(bench, "one hot user, 8 threads over 2 ledger instances", 1, n, 8, instances=2)
        scenario(bench, "100 users, 8 threads, no table lock", 100, per_user, 8, unlocked=True)
        scenario(bench, "one hot user, 8 threads over 2 instances, no table lock", 1, n, 8, True, 2)
        load_times(bench, 10_000)
        meter = Meter(None if data_dir is None else embedded_postgres_pid(data_dir))  # the database's CPU too
        for events in args.events:
            settings = Settings(_env_file=None, database_url=None)  # type: ignore[call-arg]
            audit_figures(url, settings, events, args.workers, meter)
    finally:
        if data_dir is not None:
            stop_embedded_postgres(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
