"""``vto projector`` as its own process: started far behind (emptied read models), it
rebuilds them before its threads start, then follows the log."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from benchmarks.harness import SECRET, Processes
from ledger.application import LedgerApplication
from tests.factories import new_user
from tests.projections.helpers import dump, forget, one, projected_history, tracking

REPO = Path(__file__).resolve().parents[2]


def wait_for_positions(url: str, position: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while min(tracking(url).values()) < position:
        assert process.poll() is None, "vto projector exited"
        assert time.monotonic() < deadline, f"the projector did not reach {position}: {tracking(url)}"
        time.sleep(0.05)


def test_vto_projector_far_behind_rebuilds_then_follows(
    pg_url: str, pg_ledger: LedgerApplication, tmp_path: Path
) -> None:
    head, expected = projected_history(pg_url, pg_ledger, users=5, events=400, seed=21)
    forget(pg_url)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "VTO_DATABASE_URL": pg_url,
        "VTO_JWT_SECRET": SECRET,
        "VTO_PROJECTION_REBUILD_FROM": "100",
        "VTO_PROJECTION_POLL_INTERVAL_S": "0.2",
    }
    processes = Processes(env, tmp_path / "logs")
    try:
        process = processes.start("projector")
        wait_for_positions(pg_url, head, process, 120)
        assert dump(pg_url) == expected
        user = new_user(pg_ledger, credits=1)
        after = pg_ledger.grant_credits(user, 2, "after the rebuild").position
        assert after is not None
        wait_for_positions(pg_url, after, process, 30)
        assert one(pg_url, "SELECT credits FROM point_balance WHERE user_id = %s", user) == (3,)
    finally:
        processes.stop()
    output = (tmp_path / "logs" / "projector-0.log").read_text()
    assert f"read models far behind the log: rebuilt to position {head}\n" in output, output
