"""The tracking row's lock and the events after it, read in one statement
(``tracking.lock_and_read``), on real PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from ledger.application import LedgerApplication
from projections import tracking
from tests.factories import new_user
from tests.serve_process import wait_until


def _positions(rows: list[tuple[Any, ...]]) -> list[int]:
    return [int(row[0]) for row in rows]


def test_a_runner_that_waited_for_the_lock_reads_after_the_position_left_for_it(
    pg_url: str, pg_ledger: LedgerApplication
) -> None:
    user = new_user(pg_ledger)
    for _ in range(5):
        pg_ledger.grant_credits(user, 1, "drip")
    with psycopg.connect(pg_url) as first, psycopg.connect(pg_url) as second:
        with first.cursor() as cur:  # a projection's first batch: its row is made
            position, rows = tracking.lock_and_read(cur, "t_lock", 100)
        assert position == 0 and len(rows) >= 6
        seen = _positions(rows)
        got: list[tuple[int, list[int]]] = []

        def waiting() -> None:
            with second.cursor() as cur:
                at, after = tracking.lock_and_read(cur, "t_lock", 100)
            got.append((at, _positions(after)))
            second.rollback()

        thread = threading.Thread(target=waiting)
        thread.start()
        with psycopg.connect(pg_url, autocommit=True) as watcher:
            wait_until(
                lambda: (
                    watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    ).fetchone()
                    == (1,)
                ),
                30,
                "the second runner waiting for the row",
            )
        with first.cursor() as cur:
            tracking.advance(cur, "t_lock", seen[2])
        first.commit()
        thread.join(30)
    assert got == [(seen[2], seen[3:])]
