"""GET /admin/usage: points charged, refunded, expired, adjusted and granted per category, by
day or by user and source; admins only; bad periods are 422 problems."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from tests.api_factories import make_user
from tests.usage_history import expected_rows, usage_history


def _url(start: datetime, end: datetime, group_by: str | None = None) -> str:
    url = f"/api/v1/admin/usage?from={quote(start.isoformat())}&to={quote(end.isoformat())}"
    return url if group_by is None else f"{url}&group_by={group_by}"


def test_usage_by_user(client: Any, services: Any) -> None:
    admin = make_user(services, admin=True)
    h = usage_history(services)
    response = client.get(_url(h.start, h.end, "user"), headers=admin.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["group_by"] == "user"
    rows = {(r.pop("key"), r.pop("source")): r for r in body["rows"]}
    assert rows == expected_rows(h, services)


def test_usage_by_day_adds_up_the_users(client: Any, services: Any) -> None:
    admin = make_user(services, admin=True)
    h = usage_history(services)
    if h.start.date() != h.end.date():  # the history ran across midnight (UTC): two days
        h = usage_history(services)
    response = client.get(_url(h.start, h.end), headers=admin.headers)  # by day by default
    assert response.status_code == 200
    body = response.json()
    assert body["group_by"] == "day"
    rows = {(r.pop("key"), r.pop("source")): r for r in body["rows"]}
    day = h.start.date().isoformat()
    by_source: dict[str, dict[str, int]] = {}
    for (_, source), sums in expected_rows(h, services).items():
        total = by_source.setdefault(source, dict.fromkeys(sums, 0))
        for name, value in sums.items():
            total[name] += value
    assert rows == {(day, source): sums for source, sums in by_source.items()}


def test_a_period_without_lines_is_empty(client: Any, services: Any) -> None:
    admin = make_user(services, admin=True)
    h = usage_history(services)
    response = client.get(_url(h.start - timedelta(days=3), h.start), headers=admin.headers)
    assert response.status_code == 200 and response.json()["rows"] == []


def test_usage_is_for_admins_only_and_checks_its_period(client: Any, services: Any) -> None:
    admin, seller = make_user(services, admin=True), make_user(services)
    now = datetime.now(UTC)
    week = _url(now - timedelta(days=7), now)
    assert client.get(week, headers=seller.headers).status_code == 403
    assert client.get(week).status_code == 401
    for start, end, code in (
        (now, now, "invalid_period"),
        (now - timedelta(days=400), now, "period_too_long"),
    ):
        response = client.get(_url(start, end), headers=admin.headers)
        assert response.status_code == 422 and response.json()["code"] == code
    bad = client.get(_url(now - timedelta(days=1), now, "month"), headers=admin.headers)
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
