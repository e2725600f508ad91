"""/admin/grants: credits, tickets, subscriptions in one save; admin only; bad input changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from command_api.users import roles
from infra.settings import Settings
from ledger.account import Account
from tests.api_factories import make_user
from tests.auth_helpers import API, PASSWORD, bearer, is_problem, login, register
from tests.factories import job_request


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
    ("body", "code"),
    [
        ({"credits": 5, "reason": "no target"}, "validation_error"),
        (
            {
                "email": "a@example.com",
                "user_id": "00000000-0000-0000-0000-000000000000",
                "credits": 1,
                "reason": "x",
            },
            "validation_error",
        ),
        ({"email": "TARGET", "reason": "nothing granted"}, "validation_error"),
        ({"email": "TARGET", "credits": -5, "reason": "negative"}, "validation_error"),
        ({"email": "TARGET", "credits": "lots", "reason": "wrong type"}, "validation_error"),
        ({"email": "TARGET", "tickets": {"gold": 1}, "reason": "unknown ticket"}, "unknown_ticket_type"),
        ({"email": "TARGET", "tickets": {"lookbook": 0}, "reason": "zero"}, "validation_error"),
        ({"email": "TARGET", "credits": 1}, "validation_error"),
        ({"email": "TARGET", "credits": 1, "reason": "x", "extra": True}, "validation_error"),
        ({"email": "not-an-email", "credits": 1, "reason": "x"}, "validation_error"),
    ],
)
def test_bad_grants_are_422_and_change_nothing(
    client: Any, services: Any, body: dict[str, Any], code: str
) -> None:
    admin, target = make_user(services, admin=True), make_user(services)
    if body.get("email") == "TARGET":
        body = {**body, "email": target.user.email}
    position = services.ledger.position()
    response = client.post("/api/v1/admin/grants", json=body, headers=admin.headers)
    is_problem(response, 422, code)
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


# --- who is an admin: the stored role, never an email address ----------------------------------
LISTED = "admin@example.com"  # the address the old VTO_ADMIN_EMAILS setting of the tests listed


@pytest.fixture
def api_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """As in conftest, but built with VTO_ADMIN_EMAILS still set in the environment (it used to
    make admins of the addresses it listed; now it is ignored)."""
    monkeypatch.setenv("VTO_ADMIN_EMAILS", LISTED)
    return Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]


def test_registering_an_address_once_listed_as_admin_gives_no_admin_rights(
    client: Any, services: Any
) -> None:
    # Attack: register the address an operator listed (nobody verified it) and grant yourself
    # unlimited credits, or refund anyone's jobs.
    assert register(client, LISTED.upper())["roles"] == ["user"]
    tokens = login(client, LISTED)
    assert tokens.status_code == 200, tokens.text
    attacker = bearer(tokens.json()["access_token"])
    victim = make_user(services)
    services.ledger.grant_credits(victim.id, 3, "test")
    job = uuid4()
    services.wait_for(services.ledger.request_job(victim.id, job, "image", job_request()).position)
    position = services.ledger.position()

    grant = {"email": LISTED, "credits": 1_000_000, "reason": "free money"}
    is_problem(client.post(f"{API}/admin/grants", json=grant, headers=attacker), 403, "forbidden")
    refund = {"job_id": str(job), "reason": "free refund"}
    is_problem(client.post(f"{API}/points/refund", json=refund, headers=attacker), 403, "forbidden")
    assert services.ledger.position() == position
    assert client.get(f"{API}/users/me", headers=attacker).json()["roles"] == ["user"]


def test_a_deleted_admins_email_registered_again_is_not_an_admin(client: Any, services: Any) -> None:
    admin = make_user(services, admin=True, password=PASSWORD)
    assert client.get(f"{API}/users/me", headers=admin.headers).json()["roles"] == ["admin"]
    gone = client.request("DELETE", f"{API}/users/me", json={"password": PASSWORD}, headers=admin.headers)
    assert gone.status_code == 204
    # the same address, registered by someone else: a new account, without the role
    assert register(client, admin.user.email)["roles"] == ["user"]
    tokens = login(client, admin.user.email).json()
    body = {"email": admin.user.email, "credits": 5, "reason": "x"}
    response = client.post(f"{API}/admin/grants", json=body, headers=bearer(tokens["access_token"]))
    is_problem(response, 403, "forbidden")
    with services.sessions() as session:
        assert roles.admins(session) == []  # the deleted account's role shows nowhere


def test_grants_and_refunds_record_the_acting_admins_id(client: Any, services: Any) -> None:
    admin, caller = make_user(services, admin=True), make_user(services)
    body = {
        "user_id": str(caller.id),
        "credits": 4,
        "tickets": {"lookbook": 1},
        "subscription": {"plan": "pro", "days": 30},
        "reason": "launch bonus",
    }
    assert client.post(f"{API}/admin/grants", json=body, headers=admin.headers).status_code == 201
    job = uuid4()
    services.ledger.grant_credits(caller.id, 1, "test")  # granted by code: no admin
    services.wait_for(services.ledger.request_job(caller.id, job, "video", job_request()).position)
    refund = {"job_id": str(job), "reason": "blurry video"}
    assert client.post(f"{API}/points/refund", json=refund, headers=admin.headers).status_code == 200

    events = list(services.ledger.repository.event_store.get(caller.id))
    recorded = (
        Account.CreditsGranted,
        Account.TicketsGranted,
        Account.SubscriptionActivated,
        Account.Refunded,
    )
    by_admin = [(type(e).__name__, e.by) for e in events if isinstance(e, recorded)]
    admin_id = str(admin.id)
    assert by_admin == [
        ("CreditsGranted", admin_id),
        ("TicketsGranted", admin_id),
        ("SubscriptionActivated", admin_id),
        ("CreditsGranted", None),
        ("Refunded", admin_id),
    ]
    # The reasons stay as the admin typed them (no email of the admin in the user's lines).
    lines = client.get(f"{API}/points/usage", headers=caller.headers).json()["items"]
    assert sorted(line["reason"] for line in lines if line["type"] == "grant") == [
        "launch bonus",
        "launch bonus",
        "launch bonus",
        "test",
    ]
    assert [line["reason"] for line in lines if line["type"] == "refund"] == ["admin: blurry video"]
    assert not any(admin.user.email in (line["reason"] or "") for line in lines)


@pytest.mark.parametrize(
    "amounts",
    [
        {"credits": True},
        {"credits": "7"},
        {"credits": 7.0},
        {"tickets": {"lookbook": True}},
        {"tickets": {"lookbook": "2"}},
        {"subscription": {"plan": "pro", "days": "30"}},
        {"subscription": {"plan": "pro", "days": True}},
        {"subscription": {"plan": "pro", "days": 30, "daily_quota": True}},
    ],
)
def test_grant_amounts_are_strict_integers(client: Any, services: Any, amounts: dict[str, Any]) -> None:
    """Attack: ``true`` or ``"7"`` as an amount was read as 1 or 7; every amount must be a JSON
    integer (422 otherwise) and nothing is granted."""
    admin, target = make_user(services, admin=True), make_user(services)
    position = services.ledger.position()
    body = {"email": target.user.email, "reason": "strict", **amounts}
    response = client.post(f"{API}/admin/grants", json=body, headers=admin.headers)
    is_problem(response, 422, "validation_error")
    assert services.ledger.position() == position
