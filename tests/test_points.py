"""/points: balances, usage lines, admin refunds; read-your-writes after commands."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from tests.api_factories import make_user
from tests.factories import job_request


def test_new_user_has_empty_points(client: Any, services: Any) -> None:
    caller = make_user(services)
    response = client.get("/api/v1/points", headers=caller.headers)
    assert response.status_code == 200
    assert response.json() == {
        "credit": 0,
        "tickets": {"lookbook": 0, "video": 0},
        "subscription": None,
        "pending_reservations": 0,
        "lots": {"credit": [], "ticket:lookbook": [], "ticket:video": []},
        "expiring_within_7_days": {"credit": 0, "ticket:lookbook": 0, "ticket:video": 0},
    }


def test_points_require_a_token(client: Any) -> None:
    response = client.get("/api/v1/points")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unauthorized"
    bad = client.get("/api/v1/points", headers={"Authorization": "Bearer not-a-jwt"})
    assert bad.status_code == 401


def test_points_reflect_a_reservation_at_once(client: Any, services: Any) -> None:
    caller = make_user(services)
    services.ledger.grant(caller.id, "test", credits=5, tickets={"lookbook": 1})
    result = services.ledger.request_job(caller.id, uuid4(), "image", job_request())
    services.wait_for(result.position)
    body = client.get("/api/v1/points", headers=caller.headers).json()
    assert body["credit"] == 5
    assert body["tickets"]["lookbook"] == 0
    assert body["pending_reservations"] == 1
    usage = client.get("/api/v1/points/usage", headers=caller.headers).json()
    newest = usage["items"][0]
    assert (newest["source"], newest["amount"], newest["balance_after"]) == ("ticket:lookbook", -1, 0)


def test_usage_is_paginated_newest_first(client: Any, services: Any) -> None:
    caller = make_user(services)
    for _ in range(5):
        result = services.ledger.grant_credits(caller.id, 1, "drip")
    services.wait_for(result.position)
    first = client.get("/api/v1/points/usage?limit=2", headers=caller.headers).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = client.get(
        f"/api/v1/points/usage?limit=2&cursor={first['next_cursor']}", headers=caller.headers
    ).json()
    positions = [i["position"] for i in first["items"] + second["items"]]
    assert positions == sorted(positions, reverse=True) and len(set(positions)) == 4
    assert client.get("/api/v1/points/usage?cursor=abc", headers=caller.headers).status_code == 400
    assert client.get("/api/v1/points/usage?limit=0", headers=caller.headers).status_code == 422


def test_admin_refund_once_then_conflict(client: Any, services: Any) -> None:
    admin, caller = make_user(services, admin=True), make_user(services)
    services.ledger.grant_credits(caller.id, 3, "test")
    job = uuid4()
    services.wait_for(services.ledger.request_job(caller.id, job, "image", job_request()).position)
    body = {"job_id": str(job), "reason": "bad output"}
    assert client.post("/api/v1/points/refund", json=body, headers=caller.headers).status_code == 403
    first = client.post("/api/v1/points/refund", json=body, headers=admin.headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"job_id": str(job), "user_id": str(caller.id), "source": "credit", "amount": 1}
    assert client.get("/api/v1/points", headers=caller.headers).json()["credit"] == 3
    again = client.post("/api/v1/points/refund", json=body, headers=admin.headers)
    assert again.status_code == 409
    assert again.json()["code"] == "job_already_refunded"
    missing = client.post(
        "/api/v1/points/refund", json={"job_id": str(uuid4()), "reason": "x"}, headers=admin.headers
    )
    assert missing.status_code == 404
