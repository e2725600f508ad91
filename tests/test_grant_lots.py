"""POST /admin/grants with ``expires_at`` and ``category`` (lots), and GET /points showing each
source's lots and what expires within 7 days."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tests.api_factories import make_user
from tests.auth_helpers import is_problem
from tests.factories import job_request

GRANTS = "/api/v1/admin/grants"


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def test_grants_with_expiry_and_category_are_lots_get_points_shows(client: Any, services: Any) -> None:
    admin, seller = make_user(services, admin=True), make_user(services)
    now = datetime.now(UTC).replace(microsecond=0)
    soon, later = now + timedelta(days=3), now + timedelta(days=60)
    for body in (
        {"credits": 10, "reason": "paid, never"},
        {"credits": 4, "expires_at": iso(later), "category": "promotional", "reason": "promo"},
        {"credits": 3, "tickets": {"video": 2}, "expires_at": iso(soon), "reason": "soon"},
        # given in another zone: the same instant
        {"tickets": {"lookbook": 1}, "category": "promotional", "reason": "ticket",
         "expires_at": (soon + timedelta(hours=1)).astimezone(timezone(timedelta(hours=9))).isoformat()},
    ):  # fmt: skip
        done = client.post(GRANTS, json={"user_id": str(seller.id), **body}, headers=admin.headers)
        assert done.status_code == 201, done.text
    points = client.get("/api/v1/points", headers=seller.headers).json()
    assert done.json()["points"] == points
    assert (points["credit"], points["tickets"]) == (17, {"lookbook": 1, "video": 2})

    def shown(source: str) -> list[tuple[int, str, str | None]]:
        return [(lot["left"], lot["category"], lot["expires_at"]) for lot in points["lots"][source]]

    # the burn order: earliest expiry first (never last), then promotional before paid
    assert shown("credit") == [(3, "paid", iso(soon)), (4, "promotional", iso(later)), (10, "paid", None)]
    assert shown("ticket:video") == [(2, "paid", iso(soon))]
    assert shown("ticket:lookbook") == [(1, "promotional", iso(soon + timedelta(hours=1)))]
    assert points["expiring_within_7_days"] == {"credit": 3, "ticket:lookbook": 1, "ticket:video": 2}
    assert [lot["granted"] for lot in points["lots"]["credit"]] == [3, 4, 10]

    # a charge burns the earliest expiry first, and GET /points shows what is left
    job = services.ledger.request_job(seller.id, uuid.uuid4(), "video", job_request())
    services.wait_for(job.position)
    points = client.get("/api/v1/points", headers=seller.headers).json()
    assert shown("ticket:video") == [(1, "paid", iso(soon))]
    assert points["expiring_within_7_days"]["ticket:video"] == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"credits": 5, "expires_at": "2020-01-01T00:00:00Z"}, "expires_at must be in the future"),
        ({"credits": 5, "expires_at": "2030-01-01T00:00:00"}, "Input should have timezone info"),
        ({"credits": 5, "expires_at": "tomorrow"}, "Input should be a valid datetime"),
        ({"credits": 5, "category": "free"}, "Input should be 'paid' or 'promotional'"),
        ({"credits": 5, "expires_at": 17}, "expires_at must be in the future"),  # 1970, in seconds
        (
            {"subscription": {"plan": "pro", "days": 30}, "category": "promotional"},
            "expires_at and category are for credits and tickets",
        ),
        (
            {"subscription": {"plan": "pro", "days": 30}, "expires_at": "2030-01-01T00:00:00Z"},
            "expires_at and category are for credits and tickets",
        ),
    ],
)
def test_a_bad_expiry_or_category_is_422_and_grants_nothing(
    client: Any, services: Any, body: dict[str, Any], message: str
) -> None:
    admin, seller = make_user(services, admin=True), make_user(services)
    before = services.ledger.position()
    refused = client.post(
        GRANTS, json={"user_id": str(seller.id), "reason": "r", **body}, headers=admin.headers
    )
    problem = is_problem(refused, 422, "validation_error")
    assert message in str(problem), problem
    assert services.ledger.position() == before
    assert client.get("/api/v1/points", headers=seller.headers).json()["lots"]["credit"] == []
