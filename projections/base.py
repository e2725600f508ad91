"""What a projection is: a name, the read-model tables it owns, and how a batch of events
changes them (inside the runner's transaction); how a batch's rows are written (``upsert_rows``,
``copy_rows``, ``jsonb``)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import orjson
import psycopg
from psycopg import pq
from psycopg.types.json import Jsonb

from projections.events import Notified


class Projection(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def tables(self) -> tuple[str, ...]: ...

    def apply(self, cur: psycopg.Cursor[Any], batch: Sequence[Notified], tables: Mapping[str, str]) -> None:
        """Apply ``batch`` (in log order) to the read model. ``tables`` maps each of
        ``self.tables`` to the physical table to write (the live one, or a rebuild's)."""
        ...


def identity(tables: tuple[str, ...]) -> dict[str, str]:
    return {t: t for t in tables}


def read_model_json(value: Any) -> bytes:
    """``value`` as JSON for a ``jsonb`` column, written by ``orjson`` (several times faster
    than ``json.dumps``, which was most of the cost of writing a job row). What ``orjson``
    refuses (an integer beyond 64 bits, a key that is not text, a datetime, a subclass of a
    JSON type) is written by ``json.dumps``, as before, which writes it or raises. Where the
    two differ, ``orjson``'s answer is the one PostgreSQL can store: a NaN or an infinity is
    ``null``, whichever writes it (``json.dumps`` writes ``NaN``, which ``jsonb`` refuses: the
    projection stopped on such an event), a UUID its text."""
    try:
        return orjson.dumps(value, option=_PASSTHROUGH)
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(_finite(value)).encode()


def _finite(value: Any) -> Any:
    """``value`` with each NaN or infinite float replaced by None (as ``orjson`` writes them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


_PASSTHROUGH = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def jsonb(value: Any) -> Jsonb:
    """A ``jsonb`` parameter or COPY value (``read_model_json``)."""
    return Jsonb(value, dumps=read_model_json)


def copy_rows(
    cur: psycopg.Cursor[Any], table: str, columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]]
) -> None:
    """``COPY`` ``rows`` (values in the order of ``columns``: (name, SQL type) pairs) into
    ``table``, in the binary format (the cheapest to write and to read)."""
    names = ", ".join(name for name, _ in columns)
    with cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([sql_type for _, sql_type in columns])
        for row in rows:
            copy.write_row(row)


# From this many rows a batch is staged through COPY (``upsert_rows``) unless the connection is
# in pipeline mode: sending a column as an array costs the client more per row than COPY does
# (a catch-up of 200,000 events ran at 9,700 events/s through arrays, 13,300 through COPY).
STAGE_MIN_ROWS = 50


def in_pipeline(cur: psycopg.Cursor[Any]) -> bool:
    """Whether the cursor's connection is in pipeline mode (where COPY is not allowed)."""
    return bool(cur.connection.pgconn.pipeline_status != pq.PipelineStatus.OFF)


def upsert_rows(
    cur: psycopg.Cursor[Any],
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    conflict: str,
) -> None:
    """Insert ``rows`` into ``table`` (aliased ``t``) with ``conflict`` (an ``ON CONFLICT``
    clause; empty for a plain insert), all in one ``INSERT ... SELECT``. The rows reach it in
    one of two ways:

    - a few rows, or any number in pipeline mode: in the statement itself, each column as one
      array parameter (binary format) that ``unnest`` turns back into rows: one round trip;
    - ``STAGE_MIN_ROWS`` or more otherwise (a catch-up's large batches): copied (binary
      ``COPY``) into a temporary table of this session (``ON COMMIT DELETE ROWS``, created
      in the transaction, so that it works behind a transaction-pooling proxy too), then
      inserted from there: three round trips, and less of the client's work per row; a plain
      insert (no ``conflict``) is copied into ``table`` itself.

    The rows must not repeat a key (``ON CONFLICT DO UPDATE`` refuses to change a row twice);
    no column may be of an array type (``unnest`` would flatten it)."""
    if not rows:
        return
    names = ", ".join(name for name, _ in columns)
    if len(rows) < STAGE_MIN_ROWS or in_pipeline(cur):
        arrays = ", ".join(f"%s::{sql_type}[]" for _, sql_type in columns)
        cur.execute(
            f"INSERT INTO {table} AS t ({names}) SELECT * FROM unnest({arrays}) {conflict}",
            [list(column) for column in zip(*rows, strict=True)],
        )
        return
    if not conflict:  # nothing to resolve: no need for the staging table
        copy_rows(cur, table, columns, rows)
        return
    if cur.connection.autocommit:  # the staged rows would be gone before the INSERT read them
        raise ValueError("upsert_rows stages this many rows in a transaction")
    stage = f"stage_{table}"
    cur.execute(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} "
        f"({', '.join(f'{name} {sql_type}' for name, sql_type in columns)}) ON COMMIT DELETE ROWS"
    )
    copy_rows(cur, stage, columns, rows)
    cur.execute(f"INSERT INTO {table} AS t ({names}) SELECT {names} FROM {stage} {conflict}")
