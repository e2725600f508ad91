"""Incremental projection equals a rebuild from scratch, after a random history; a rebuild
swaps its tables in while a runner keeps going."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

import projections.rebuild
from infra.cli import app as cli
from infra.settings import Settings, get_settings
from ledger.application import LedgerApplication
from projections.rebuild import catch_up_by_rebuild, far_behind, rebuild
from projections.registry import all_projections
from projections.runner import Projector
from tests.factories import new_user
from tests.projections.helpers import (
    READ_MODELS,
    dump,
    forget,
    projected_history,
    tracking,
    wait_for_position,
)
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


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_a_rebuild_of_all_projections_in_worker_processes_equals_the_incremental_read_models(
    pg_url: str, pg_ledger: LedgerApplication, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    """The log is read once, stream by stream, by three processes (each a range of the users,
    in one snapshot; forked or spawned), folded in memory and copied in; then the events
    appended after that snapshot in log order. Equal, row for row, to the runners'
    incremental read models."""
    monkeypatch.setattr(projections.rebuild, "worker_context", lambda: multiprocessing.get_context(start))
    random_history(pg_ledger, users=12, events=900, seed=4)
    projector = Projector(pg_url, batch_size=37, poll_interval=1.0)
    projector.catch_up()
    incremental = dump(pg_url)
    assert incremental["point_usage"] and incremental["gallery"] and incremental["project_stats"]
    indexes = _indexes(pg_url)
    position = rebuild(pg_url, all_projections(), workers=3)
    assert dump(pg_url) == incremental
    assert _indexes(pg_url) == indexes  # built after the rows went in, the same as before
    assert tracking(pg_url) == {"points": position, "jobs": position}
    random_history(pg_ledger, users=3, events=200, seed=5)  # and the runners go on from there
    projector.catch_up()
    after = dump(pg_url)
    rebuild(pg_url, all_projections(), workers=1)
    assert dump(pg_url) == after


def _indexes(url: str) -> list[tuple[str, str]]:
    """Each read-model table's index definitions, without the index names."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename, regexp_replace(indexdef, 'INDEX \\S+ ON', 'INDEX ON') FROM pg_indexes "
            "WHERE tablename = ANY(%s) ORDER BY 1, 2",
            (list(READ_MODELS),),
        ).fetchall()
    assert len(rows) >= len(READ_MODELS)
    return rows


def test_vto_ledger_rebuild_rebuilds_every_projection_in_one_pass(
    pg_url: str, pg_ledger: LedgerApplication
) -> None:
    random_history(pg_ledger, users=4, events=300, seed=8)
    Projector(pg_url, poll_interval=1.0).catch_up()
    before = dump(pg_url)
    get_settings.cache_clear()  # the settings are cached per process; this test changes the env
    result = CliRunner().invoke(
        cli, ["ledger", "rebuild"], env={"VTO_DATABASE_URL": pg_url, "VTO_JWT_SECRET": "s" * 40}
    )
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output + repr(result.exception)
    head = pg_ledger.position()
    assert result.output.splitlines() == [
        f"points: rebuilt up to position {head}",
        f"jobs: rebuilt up to position {head}",
    ]
    assert dump(pg_url) == before


@pytest.mark.parametrize(
    ("position", "newest", "at_least", "far"),
    [
        (0, 300, 100, True),
        (0, 99, 100, False),  # a short log: batch by batch
        (200, 300, 100, True),  # a third of the log behind
        (201, 300, 99, False),  # less than a third
        (0, 300, 0, False),  # 0: never
        (300, 300, 1, False),
    ],
)
def test_far_behind(position: int, newest: int, at_least: int, far: bool) -> None:
    assert far_behind(position, newest, at_least) is far


def test_rebuilds_take_turns(pg_url: str, pg_ledger: LedgerApplication) -> None:
    """Two at once would drop each other's shadow tables: a rebuild waits for the one under
    way (its lock), then rebuilds."""
    random_history(pg_ledger, users=4, events=200, seed=8)
    Projector(pg_url, poll_interval=1.0).catch_up()
    expected = dump(pg_url)
    done = threading.Event()
    with psycopg.connect(pg_url, autocommit=True) as holder:
        holder.execute(projections.rebuild._LOCK)  # a rebuild under way
        waiting = threading.Thread(target=lambda: (rebuild(pg_url, all_projections()), done.set()))
        waiting.start()
        deadline = time.monotonic() + 30
        while not _waits_for_an_advisory_lock(holder):
            assert time.monotonic() < deadline, "the second rebuild never asked for the lock"
        assert not done.is_set()
    waiting.join(timeout=60)
    assert done.is_set() and dump(pg_url) == expected


def test_a_catch_up_by_rebuild_only_when_far_behind(pg_url: str, pg_ledger: LedgerApplication) -> None:
    head, expected = projected_history(pg_url, pg_ledger, users=4, events=300, seed=9)
    assert catch_up_by_rebuild(pg_url, all_projections(), at_least=1) is None  # not behind
    forget(pg_url)
    assert catch_up_by_rebuild(pg_url, all_projections(), at_least=head + 1) is None  # fewer than asked
    assert tracking(pg_url) == {"points": 0, "jobs": 0}
    assert catch_up_by_rebuild(pg_url, all_projections(), at_least=head) == head
    assert dump(pg_url) == expected and tracking(pg_url) == {"points": head, "jobs": head}


def _waits_for_an_advisory_lock(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()
    return row is not None and row[0] > 0
