"""Read-your-writes from a process without runners: the shared PositionWatcher."""

from __future__ import annotations

from ledger.application import LedgerApplication
from projections.runner import Projector
from projections.wait import PositionWatcher
from tests.factories import new_user


def test_watcher_sees_the_runners_commits(pg_url: str, pg_ledger: LedgerApplication) -> None:
    watcher = PositionWatcher(pg_url, ["points", "jobs"], poll_interval=5.0).start()
    try:
        user = new_user(pg_ledger, credits=3)
        position = pg_ledger.grant_credits(user, 1, "more").position
        assert position is not None
        assert watcher.wait_for(position, timeout=0.3) is False  # no runner yet: not applied
        with Projector(pg_url, poll_interval=1.0):
            # Woken by the runners' NOTIFY, well before the 5 s poll fallback.
            assert watcher.wait_for(position, timeout=4.0) is True
        assert watcher.position() >= position
        assert watcher.wait_for(None, timeout=0) is True
    finally:
        watcher.stop()
