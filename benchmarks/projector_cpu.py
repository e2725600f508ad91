"""The projections' cost at a low, steady rate: each event a batch of its own.

    uv run --frozen python benchmarks/projector_cpu.py [--events 1000] [--interval-ms 5]

Starts an embedded PostgreSQL in a temporary directory, migrates it, seeds 200 accounts, starts
``vto projector`` in its own process, then orders ``--events`` jobs through the ledger in this
process, one every ``--interval-ms`` (what one client ordering one job at a time looks like to
the projector). Prints the CPU seconds per event of the projector process and of every
PostgreSQL process (the appends included), read before and after the orders, and checks that
the projector caught up with every event."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.harness import SECRET, tree_cpu_seconds
from infra.database import embedded_postgres_pid, embedded_postgres_url, stop_embedded_postgres
from infra.ledger_store import postgres_ledger
from infra.migrate import upgrade
from infra.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
USERS = 200


def order() -> dict[str, Any]:
    return {
        "project_id": str(uuid.uuid4()),
        "product_ids": [str(uuid.uuid4())],
        "model_asset_id": str(uuid.uuid4()),
    }


def caught_up(url: str, position: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT min(position) FROM projection_tracking WHERE name IN ('points', 'jobs')"
            )
            found = row.fetchone()
            if found is not None and found[0] is not None and found[0] >= position:
                return True
            time.sleep(0.05)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--interval-ms", type=float, default=5.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vto-projector-cpu-"))
    url = embedded_postgres_url(root)
    projector: subprocess.Popen[bytes] | None = None
    try:
        upgrade(url)
        ledger = postgres_ledger(Settings(), url)
        users = [uuid.uuid4() for _ in range(USERS)]
        for user in users:
            ledger.grant_credits(user, 1_000_000, "seed")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "VTO_DATABASE_URL": url, "VTO_JWT_SECRET": SECRET}
        command = [sys.executable, "-c", "from infra.cli import main; main()", "projector"]
        projector = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not caught_up(url, ledger.position()):
            print("the projector did not start", file=sys.stderr)
            return 1
        postmaster = embedded_postgres_pid(root)
        assert postmaster is not None
        before = tree_cpu_seconds([projector.pid]), tree_cpu_seconds([postmaster])
        started = time.monotonic()
        for i in range(args.events):
            ledger.request_job(users[i % USERS], uuid.uuid4(), "image", order())
            time.sleep(args.interval_ms / 1000)
        if not caught_up(url, ledger.position()):
            print("the projector did not catch up", file=sys.stderr)
            return 1
        elapsed = time.monotonic() - started
        projector_s = tree_cpu_seconds([projector.pid]) - before[0]
        postgres_s = tree_cpu_seconds([postmaster]) - before[1]
        print(
            f"{args.events} orders in {elapsed:.1f} s, one every {args.interval_ms} ms: "
            f"projector {1000 * projector_s / args.events:.2f} ms CPU an event, "
            f"PostgreSQL (the appends included) {1000 * postgres_s / args.events:.2f} ms"
        )
        ledger.close()
        return 0
    finally:
        if projector is not None:
            projector.terminate()
            projector.wait(30)
        stop_embedded_postgres(root)


if __name__ == "__main__":
    sys.exit(main())
