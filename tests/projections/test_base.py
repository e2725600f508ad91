"""How a batch's rows are written: ``upsert_rows`` (one statement for the batch), ``copy_rows``
and the JSON of ``jsonb`` columns (``read_model_json``)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import hypothesis.strategies as st
import psycopg
import pytest
from hypothesis import given, settings

from projections.base import STAGE_MIN_ROWS, jsonb, read_model_json, upsert_rows

COLUMNS = (("id", "uuid"), ("n", "bigint"), ("doc", "jsonb"), ("at", "timestamptz"), ("note", "text"))
CONFLICT = "ON CONFLICT (id) DO UPDATE SET n = t.n + EXCLUDED.n, doc = EXCLUDED.doc, at = EXCLUDED.at"

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(codec="utf-8")),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


def _without_non_finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _without_non_finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_non_finite(v) for v in value]
    return value


@settings(max_examples=300, deadline=None)
@given(_json)
def test_read_model_json_means_what_json_dumps_means(value: Any) -> None:
    """The same JSON value (NaN and infinities, which JSON lacks, as null)."""
    assert json.loads(read_model_json(value)) == json.loads(json.dumps(_without_non_finite(value)))


def test_what_orjson_refuses_is_written_by_json() -> None:
    assert json.loads(read_model_json({"big": 2**70, "nan": math.nan})) == {"big": 2**70, "nan": None}
    assert json.loads(read_model_json({1: "a", None: "b"})) == {"1": "a", "null": "b"}
    assert json.loads(read_model_json({"id": UUID(int=1)})) == {"id": str(UUID(int=1))}
    with pytest.raises(TypeError):  # as json.dumps: a datetime is no JSON
        read_model_json({"at": datetime.now(UTC)})


def test_upsert_rows_writes_a_batch_in_one_statement(pg_url: str) -> None:
    a, b = uuid4(), uuid4()
    now = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "CREATE TABLE t_upsert "
            "(id uuid PRIMARY KEY, n bigint NOT NULL, doc jsonb, at timestamptz, note text)"
        )
        conn.commit()
        statements: list[Any] = []
        execute = psycopg.Cursor.execute

        def counted(cur: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            statements.append(query)
            return execute(cur, query, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(psycopg.Cursor, "execute", counted)
            with conn.transaction(), conn.cursor(binary=True) as cur:
                rows = [(a, 1, jsonb({"x": [1, "é"]}), now, "bad"), (b, 2, None, None, None)]
                upsert_rows(cur, "t_upsert", COLUMNS, rows, CONFLICT)
        assert len(statements) == 1
        with conn.transaction(), conn.cursor() as cur:  # text format; every value of a column null
            upsert_rows(cur, "t_upsert", COLUMNS, [(a, 10, jsonb({"y": None}), None, None)], CONFLICT)
        with conn.transaction(), conn.cursor() as cur:
            upsert_rows(cur, "t_upsert", COLUMNS, [], CONFLICT)  # nothing to write: no statement
        with pytest.raises(psycopg.errors.NotNullViolation), conn.transaction(), conn.cursor() as cur:
            upsert_rows(cur, "t_upsert", COLUMNS, [(uuid4(), None, None, None, None)], CONFLICT)
        stored = conn.execute("SELECT id, n, doc, at, note FROM t_upsert ORDER BY n").fetchall()
    assert stored == [(b, 2, None, None, None), (a, 11, {"y": None}, None, "bad")]
    with psycopg.connect(pg_url, autocommit=True) as conn:  # one statement: no transaction needed
        upsert_rows(conn.cursor(), "t_upsert", COLUMNS, [(b, 1, None, None, "autocommit")], CONFLICT)
        assert conn.execute("SELECT n, note FROM t_upsert WHERE id = %s", (b,)).fetchone() == (3, None)


def test_many_rows_are_staged_through_copy_unless_in_a_pipeline(pg_url: str) -> None:
    many = [(uuid4(), n, None, None, f"row {n}") for n in range(STAGE_MIN_ROWS)]
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "CREATE TABLE t_many "
            "(id uuid PRIMARY KEY, n bigint NOT NULL, doc jsonb, at timestamptz, note text)"
        )
        conn.commit()
        with conn.transaction(), conn.cursor(binary=True) as cur:
            upsert_rows(cur, "t_many", COLUMNS, many[:25], CONFLICT)  # arrays: no staging table
            assert conn.execute("SELECT to_regclass('pg_temp.stage_t_many')").fetchone() == (None,)
            upsert_rows(cur, "t_many", COLUMNS, many, CONFLICT)  # staged through COPY
        assert conn.execute("SELECT count(*) FROM stage_t_many").fetchone() == (0,)  # emptied at commit
        with conn.pipeline(), conn.transaction(), conn.cursor(binary=True) as cur:  # COPY not allowed: arrays
            upsert_rows(cur, "t_many", COLUMNS, many, CONFLICT)
        assert conn.execute("SELECT count(*), sum(n) FROM t_many").fetchone() == (
            STAGE_MIN_ROWS,
            3 * sum(range(25)) + 2 * sum(range(25, STAGE_MIN_ROWS)),
        )
        conn.commit()
        conn.autocommit = True
        with pytest.raises(ValueError, match="transaction"):
            upsert_rows(conn.cursor(), "t_many", COLUMNS, many, CONFLICT)
        conn.execute("DROP TABLE stage_t_many")
        conn.execute("TRUNCATE t_many")
        upsert_rows(conn.cursor(), "t_many", COLUMNS, many, "")  # a plain insert: copied in directly
        assert conn.execute("SELECT to_regclass('pg_temp.stage_t_many')").fetchone() == (None,)
        assert conn.execute("SELECT count(*), sum(n) FROM t_many").fetchone() == (
            STAGE_MIN_ROWS,
            sum(range(STAGE_MIN_ROWS)),
        )
