"""/admin/grants: credits, tickets, subscriptions in one save; admin only; bad input changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api_factories import make_user


def test_admin_grants_credits_tickets_and_subscription(client: Any, services: Any) -> None:
    admin, caller = make_user(services, admin=True), make_user(services)
    position_before = services.ledger.position()
    response = client.post(
        "/api/v1/admin/grants",
        json={
            "email": caller.user.email.upper(),
            "credits": 10,
            "tickets": {"lookbook": 2},
            "subscription": {"plan": "pro", "days": 30, "daily_quota": 5},
            "reason": "launch",
        },
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    points = response.json()["points"]
    assert points["credit"] == 10 and points["tickets"]["lookbook"] == 2
    assert points["subscription"]["plan"] == "pro" and points["subscription"]["daily_quota"] == 5
    # One save: the three grants are consecutive events of one write.
    assert services.ledger.position() == position_before + 3
    assert client.get("/api/v1/points", headers=caller.headers).json() == points


@pytest.mark.parametrize(
    "body",
    [
        {"credits": 5, "reason": "no target"},
        {
            "email": "a@example.com",
            "user_id": "00000000-0000-0000-0000-000000000000",
            "credits": 1,
            "reason": "x",
        },
        {"email": "TARGET", "reason": "nothing granted"},
        {"email": "TARGET", "credits": -5, "reason": "negative"},
        {"email": "TARGET", "credits": "lots", "reason": "wrong type"},
        {"email": "TARGET", "tickets": {"gold": 1}, "reason": "unknown ticket"},
        {"email": "TARGET", "tickets": {"lookbook": 0}, "reason": "zero"},
        {"email": "TARGET", "credits": 1},
        {"email": "TARGET", "credits": 1, "reason": "x", "extra": True},
        {"email": "not-an-email", "credits": 1, "reason": "x"},
    ],
)
def test_bad_grants_are_4xx_and_change_nothing(client: Any, services: Any, body: dict[str, Any]) -> None:
    admin, target = make_user(services, admin=True), make_user(services)
    if body.get("email") == "TARGET":
        body = {**body, "email": target.user.email}
    position = services.ledger.position()
    response = client.post("/api/v1/admin/grants", json=body, headers=admin.headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "code" in response.json()
    assert services.ledger.position() == position


def test_grants_are_for_admins_only(client: Any, services: Any) -> None:
    caller = make_user(services)
    body = {"email": caller.user.email, "credits": 5, "reason": "self-service?"}
    assert client.post("/api/v1/admin/grants", json=body, headers=caller.headers).status_code == 403
    assert client.post("/api/v1/admin/grants", json=body).status_code == 401


def test_grant_to_unknown_user_is_404(client: Any, services: Any) -> None:
    admin = make_user(services, admin=True)
    body = {"email": "nobody@example.com", "credits": 5, "reason": "x"}
    response = client.post("/api/v1/admin/grants", json=body, headers=admin.headers)
    assert response.status_code == 404
