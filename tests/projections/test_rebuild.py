"""Incremental projection equals a rebuild from scratch, after a random history; a rebuild
swaps its tables in while a runner keeps going."""

from __future__ import annotations

import pytest

from infra.settings import Settings
from ledger.application import LedgerApplication
from projections.rebuild import rebuild
from projections.registry import all_projections
from projections.runner import Projector
from projections.wait import wait_for_position
from tests.factories import new_user
from tests.projections.helpers import dump, tracking
from tests.projections.history import random_history


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_equals_rebuild_after_a_random_history(
    pg_url: str, pg_ledger: LedgerApplication, seed: int
) -> None:
    projector = Projector(pg_url, batch_size=37, poll_interval=1.0)  # odd batches: cut histories anywhere
    for part in range(3):
        random_history(pg_ledger, users=8, events=600, seed=seed * 10 + part)
        projector.catch_up()
    incremental = dump(pg_url)
    assert incremental["point_usage"] and incremental["gallery"]
    for projection in all_projections():
        rebuild(pg_url, projection)
    assert dump(pg_url) == incremental
    assert set(tracking(pg_url)) == {"points", "jobs"}


def test_rebuild_while_the_runners_run(pg_url: str, pg_ledger: LedgerApplication, settings: Settings) -> None:
    random_history(pg_ledger, users=5, events=500, seed=7)
    with Projector(pg_url, poll_interval=0.05):
        for projection in all_projections():
            rebuild(pg_url, projection)
        user = new_user(pg_ledger, credits=3)
        position = pg_ledger.grant_credits(user, 1, "after the swap").position
        assert wait_for_position(pg_url, ["points", "jobs"], position, timeout=10)
    live = dump(pg_url)
    for projection in all_projections():
        rebuild(pg_url, projection)
    assert dump(pg_url) == live
