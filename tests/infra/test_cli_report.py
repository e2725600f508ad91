"""``vto ledger report``: the usage report of GET /admin/usage, from the command line."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from tests.usage_history import expected_rows, usage_history


def _when(t: Any) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S%z")


def test_report_by_user_as_json_equals_the_api(vto: Any, client: Any, services: Any) -> None:
    h = usage_history(services)
    start, end = h.start - timedelta(seconds=1), h.end + timedelta(seconds=1)  # whole seconds
    period = ("--from", _when(start), "--to", _when(end))
    result = vto("ledger", "report", *period, "--group-by", "user", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["group_by"] == "user"
    assert {(r.pop("key"), r.pop("source")): r for r in body["rows"]} == expected_rows(h, services)


def test_report_by_day_as_a_table(vto: Any, client: Any, services: Any) -> None:
    h = usage_history(services)
    start, end = h.start - timedelta(days=1), h.end + timedelta(days=1)
    result = vto("ledger", "report", "--from", _when(start), "--to", _when(end))
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == [
        "key",
        "source",
        "charged",
        "refunded",
        "expired",
        "adjusted",
        "granted_paid",
        "granted_promotional",
        "settled_jobs",
    ]
    credit = [r.split() for r in rows if r.split()[1] == "credit"]
    if h.start.date() == h.end.date():  # not across midnight (UTC)
        assert len(credit) == 1 and credit[0][0] == h.start.date().isoformat()
    granted_paid = sum(int(r.split()[6]) for r in rows)
    assert granted_paid == 50 + 2 + 10


def test_report_refuses_a_bad_period(vto: Any) -> None:
    result = vto("ledger", "report", "--from", "2026-02-01", "--to", "2026-01-01")
    assert result.exit_code == 2 and "from must be before to" in result.output
    result = vto("ledger", "report", "--from", "2024-01-01", "--to", "2026-01-01")
    assert result.exit_code == 2 and "at most 366 days" in result.output
    result = vto("ledger", "report", "--from", "2026-01-01", "--to", "2026-01-02", "--group-by", "month")
    assert result.exit_code == 2
