"""benchmarks/pipeline_bench.py on a few jobs: each queue's row says every job went through
(relay -> worker -> ingestor) on a broker of its own, and Tansu's producer spoke the modern
protocol, idempotent with headers (its version detected)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import pipeline_bench


def test_a_small_run_reports_each_queue(pg_server_url: str, tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    argv = ["--jobs", "4", "--workers", "1", "--brokers", "tansu,memory", "--database-url", pg_server_url]
    argv += ["--session-timeout-ms", "2000"]  # Tansu's first join takes half of it
    assert pipeline_bench.main([*argv, "--timeout", "120", "--json", str(out)]) == 0
    rows = {row["queue"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {"tansu", "memory"}
    for row in rows.values():
        assert row["jobs"] == 4
        assert 0 < row["join_s"] <= row["total_s"]
        assert row["jobs_per_s"] == pytest.approx(4 / row["total_s"])
    assert rows["tansu"]["api"].endswith("(idempotent, carries_headers)")
    assert rows["memory"]["api"] == "-"


def test_unknown_queues_are_refused() -> None:
    with pytest.raises(SystemExit):
        pipeline_bench.main(["--brokers", "rabbitmq"])
