"""Reading the read models back, for comparisons."""

from __future__ import annotations

from typing import Any

import psycopg

from projections.registry import all_projections

READ_MODELS = {
    "point_balance": "user_id",
    "point_usage": "position",
    "point_reservation": "job_id",
    "point_lot": "user_id, lot_id",
    "vto_job": "job_id",
    "gallery": "job_id, output_index",
    "project_stats": "project_id",
}


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every read-model row, in key order."""
    with psycopg.connect(url) as conn:
        return {
            t: conn.execute(f"SELECT * FROM {t} ORDER BY {key}").fetchall() for t, key in READ_MODELS.items()
        }


def one(url: str, sql: str, *params: Any) -> Any:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchone()


def tracking(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT name, position FROM projection_tracking").fetchall())


def forget(url: str) -> None:
    """Empty every projection's read models and move their positions back to the start (read
    models restored from an old backup, or a new deployment): the log is all backlog."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(t for p in all_projections() for t in p.tables)}")
        conn.execute("UPDATE projection_tracking SET position = 0")
