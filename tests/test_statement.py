"""GET /points/statement: balances at both ends of a period, every line between (paged, or as
CSV), opening plus lines equals closing; bad periods are 422 problems."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from uuid import uuid4

from tests.api_factories import make_user
from tests.factories import job_request


def _at(t: datetime) -> str:
    return quote(t.isoformat())


def _history(services: Any) -> tuple[Any, datetime, datetime]:
    """A user with lines before, inside and after a period: (caller, from, to)."""
    caller = make_user(services)
    ledger = services.ledger
    ledger.grant(caller.id, "welcome", credits=50, tickets={"lookbook": 2})
    start = datetime.now(UTC)
    ledger.grant_credits(caller.id, 20, "promo", category="promotional")
    ledger.request_job(caller.id, uuid4(), "image", job_request())  # a lookbook ticket
    ledger.request_job(caller.id, uuid4(), "image", job_request())  # the second
    job = uuid4()
    ledger.request_job(caller.id, job, "image", job_request())  # credits
    ledger.fail_job(caller.id, job, {"code": "boom", "message": "boom", "retryable": False})
    ledger.adjust(caller.id, "credit", -3, "correction")
    done = uuid4()
    ledger.request_job(caller.id, done, "image", job_request())
    result = ledger.complete_job(caller.id, done, [])
    services.wait_for(result.position)
    end = datetime.now(UTC)
    result = ledger.grant_credits(caller.id, 1000, "after the period")
    services.wait_for(result.position)
    return caller, start, end


def _all_pages(client: Any, caller: Any, start: datetime, end: datetime, limit: int) -> list[dict[str, Any]]:
    pages = []
    cursor = ""
    while True:
        url = f"/api/v1/points/statement?from={_at(start)}&to={_at(end)}&limit={limit}{cursor}"
        response = client.get(url, headers=caller.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        if page["next_cursor"] is None:
            return pages
        cursor = f"&cursor={page['next_cursor']}"


def test_opening_plus_lines_is_closing(client: Any, services: Any) -> None:
    caller, start, end = _history(services)
    (page,) = _all_pages(client, caller, start, end, 200)
    assert page["opening"] == {"credit": 50, "ticket:lookbook": 2, "ticket:video": 0}
    lines = page["items"]
    assert [line["type"] for line in lines] == [
        "grant",
        "reservation",
        "reservation",
        "reservation",
        "refund",
        "adjustment",
        "reservation",
        "settlement",
    ]
    assert lines[0]["category"] == "promotional" and lines[0]["amount"] == 20
    assert all(line["category"] is None for line in lines[1:])
    assert lines[4]["job_id"] == lines[3]["job_id"] is not None
    moved = Counter[str]()
    for line in lines:
        moved[line["source"]] += line["amount"]
    closing = {source: page["opening"][source] + moved[source] for source in page["opening"]}
    assert page["closing"] == closing == {"credit": 50 + 20 - 3 - 1, "ticket:lookbook": 0, "ticket:video": 0}
    # the grant after the period is in neither the lines nor the closing balance
    now = client.get("/api/v1/points", headers=caller.headers).json()
    assert now["credit"] == page["closing"]["credit"] + 1000


def test_pages_together_are_the_whole_statement(client: Any, services: Any) -> None:
    caller, start, end = _history(services)
    (whole,) = _all_pages(client, caller, start, end, 200)
    pages = _all_pages(client, caller, start, end, 3)
    assert [len(p["items"]) for p in pages] == [3, 3, 2]
    assert [line for p in pages for line in p["items"]] == whole["items"]
    assert all((p["opening"], p["closing"]) == (whole["opening"], whole["closing"]) for p in pages)
    bad = client.get(
        f"/api/v1/points/statement?from={_at(start)}&to={_at(end)}&cursor=nope", headers=caller.headers
    )
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"


def test_csv_is_the_same_statement(client: Any, services: Any) -> None:
    caller, start, end = _history(services)
    (page,) = _all_pages(client, caller, start, end, 200)
    response = client.get(
        f"/api/v1/points/statement?from={_at(start)}&to={_at(end)}",
        headers={**caller.headers, "Accept": "text/csv"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["source"]: int(r["balance_after"]) for r in rows if r["row"] == "opening"} == page["opening"]
    assert {r["source"]: int(r["balance_after"]) for r in rows if r["row"] == "closing"} == page["closing"]
    lines = [r for r in rows if r["row"] == "line"]
    assert len(lines) == len(page["items"])
    for row, line in zip(lines, page["items"], strict=True):
        assert int(row["position"]) == line["position"]
        assert datetime.fromisoformat(row["created_at"]) == datetime.fromisoformat(line["created_at"])
        assert (row["type"], row["source"]) == (line["type"], line["source"])
        assert int(row["amount"]) == line["amount"]
        assert (row["category"] or None) == line["category"]
        assert (int(row["balance_after"]) if row["balance_after"] else None) == line["balance_after"]
        assert (row["job_id"] or None) == line["job_id"]
        assert (row["reason"] or None) == line["reason"]


def test_a_period_before_any_line_is_empty_and_zero(client: Any, services: Any) -> None:
    caller, start, _ = _history(services)
    (page,) = _all_pages(client, caller, start - timedelta(days=2), start - timedelta(days=1), 50)
    assert page["items"] == [] and page["opening"] == page["closing"] == {
        "credit": 0,
        "ticket:lookbook": 0,
        "ticket:video": 0,
    }


def test_bad_periods_are_422_problems(client: Any, services: Any) -> None:
    caller = make_user(services)
    now = datetime.now(UTC)
    cases = {
        (now, now): "invalid_period",
        (now, now - timedelta(seconds=1)): "invalid_period",
        (now - timedelta(days=367), now): "period_too_long",
    }
    for (start, end), code in cases.items():
        response = client.get(
            f"/api/v1/points/statement?from={_at(start)}&to={_at(end)}", headers=caller.headers
        )
        assert response.status_code == 422, (start, end)
        assert response.json()["code"] == code
    missing = client.get(f"/api/v1/points/statement?from={_at(now)}", headers=caller.headers)
    assert missing.status_code == 422 and missing.json()["code"] == "validation_error"
    garbage = client.get("/api/v1/points/statement?from=yesterday&to=today", headers=caller.headers)
    assert garbage.status_code == 422
    assert client.get(f"/api/v1/points/statement?from={_at(now)}&to={_at(now)}").status_code == 401


def test_a_time_without_offset_is_utc(client: Any, services: Any) -> None:
    caller, start, end = _history(services)
    naive = f"from={start.replace(tzinfo=None).isoformat()}&to={end.replace(tzinfo=None).isoformat()}"
    response = client.get(f"/api/v1/points/statement?{naive}", headers=caller.headers)
    assert response.status_code == 200
    assert len(response.json()["items"]) == 8
