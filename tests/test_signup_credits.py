"""Sign-up credits (``VTO_SIGNUP_CREDITS``): a promotional lot granted once per account, and once
per address ever, when the account's address is first verified: a verification link, a
password reset, a provider sign-in with a verified email."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from command_api.auth import mail_tokens
from command_api.points import signup
from command_api.users.models import RESET_PASSWORD, VERIFY_EMAIL, User
from infra.settings import Settings
from tests.auth_helpers import API, PASSWORD, bearer, login, register
from tests.test_auth import FakeProviders, google_user, oauth

CREDITS = 25


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path / "data",
        signup_credits=CREDITS,
        signup_credits_expire_days=30,
        google_client_id="google-client",
        google_client_secret="google-secret",
    )


def mailed_token(services: Any, user_id: Any, purpose: str = VERIFY_EMAIL) -> str:
    """A mailed link's token for the account's address, as the mail would carry it."""
    with services.sessions() as session:
        user = session.get(User, uuid.UUID(str(user_id)))
        assert user is not None
        token = mail_tokens.issue(session, user, purpose, user.email, 3600)
        session.commit()
    return token


def signed_up(client: Any, email: str) -> tuple[str, str]:
    """A registered account (unverified): its id and an access token."""
    created = register(client, email)
    return created["id"], login(client, email).json()["access_token"]


def verify(client: Any, services: Any, user_id: str, access: str) -> None:
    response = client.post(
        f"{API}/auth/verify-email", json={"token": mailed_token(services, user_id)}, headers=bearer(access)
    )
    assert response.status_code == 204, response.text


def lots(services: Any, user_id: Any) -> list[tuple[str, str, int, int]]:
    """(source, category, granted, left) of each of the account's lots in the ledger."""
    held = services.ledger.account(uuid.UUID(str(user_id))).lots.values()
    return [(lot["source"], lot["category"], lot["amount"], lot["left"]) for lot in held]


def claims(services: Any) -> list[tuple[Any, ...]]:
    with services.sessions() as session:
        rows = session.execute(text("SELECT email_sha256, user_id, amount FROM signup_credit_grants"))
        return [tuple(r) for r in rows]


def test_verifying_the_address_grants_them_once_as_promotional_expiring_credits(
    client: Any, services: Any
) -> None:
    user_id, access = signed_up(client, "Seller@Example.com")
    assert lots(services, user_id) == []  # registering grants nothing: the address is unproven
    verify(client, services, user_id, access)
    assert lots(services, user_id) == [("credit", "promotional", CREDITS, CREDITS)]
    [lot] = services.ledger.account(uuid.UUID(user_id)).lots.values()
    assert lot["expires_at"] is not None
    assert (
        timedelta(days=30) - timedelta(minutes=1)
        < lot["expires_at"] - datetime.now(UTC)
        <= timedelta(days=30)
    )
    # the address is kept as the SHA-256 of its canonical form, never in clear
    assert claims(services) == [(signup.email_sha256("seller@example.com"), uuid.UUID(user_id), CREDITS)]

    services.wait_for(services.ledger.position())
    body = client.get(f"{API}/points", headers=bearer(access)).json()
    assert body["credit"] == CREDITS
    assert [(x["left"], x["category"]) for x in body["lots"]["credit"]] == [(CREDITS, "promotional")]
    [line] = client.get(f"{API}/points/usage", headers=bearer(access)).json()["items"]
    assert (line["type"], line["amount"], line["reason"]) == ("grant", CREDITS, signup.REASON)

    # verified again (a reset, a granted address's change): nothing more
    reset = client.post(
        f"{API}/auth/password/reset",
        json={"token": mailed_token(services, user_id, RESET_PASSWORD), "password": "another horse battery"},
    )
    assert reset.status_code == 204, reset.text
    assert (
        signup.grant_signup_credits(
            services.engine, services.ledger, services.settings, uuid.UUID(user_id), "seller@example.com"
        )
        is None
    )
    assert lots(services, user_id) == [("credit", "promotional", CREDITS, CREDITS)]


def test_a_password_reset_proves_the_address_too(client: Any, services: Any) -> None:
    user_id, _ = signed_up(client, "reset@example.com")
    reset = client.post(
        f"{API}/auth/password/reset",
        json={"token": mailed_token(services, user_id, RESET_PASSWORD), "password": "another horse battery"},
    )
    assert reset.status_code == 204, reset.text
    assert lots(services, user_id) == [("credit", "promotional", CREDITS, CREDITS)]


def test_registering_again_after_a_deletion_grants_nothing(client: Any, services: Any) -> None:
    first, access = signed_up(client, "again@example.com")
    verify(client, services, first, access)
    gone = client.request("DELETE", f"{API}/users/me", json={"password": PASSWORD}, headers=bearer(access))
    assert gone.status_code == 204, gone.text

    second, access = signed_up(client, "AGAIN@example.com")  # the same canonical address
    assert second != first
    verify(client, services, second, access)
    assert lots(services, second) == []
    assert [c[1] for c in claims(services)] == [uuid.UUID(first)]
    # nor with a provider that verified it
    FakeProviders(userinfo={"google": google_user("g-again", "again@example.com")}).install(services)
    signed_in = oauth(client, "google")
    assert signed_in.status_code == 200, signed_in.text
    assert lots(services, second) == []


def test_a_provider_sign_in_with_a_verified_email_grants_them_once(client: Any, services: Any) -> None:
    FakeProviders(userinfo={"google": google_user("g-new", "new@gmail.com")}).install(services)
    first = oauth(client, "google")
    assert first.status_code == 200, first.text
    me = client.get(f"{API}/users/me", headers=bearer(first.json()["access_token"])).json()
    assert lots(services, me["id"]) == [("credit", "promotional", CREDITS, CREDITS)]
    again = oauth(client, "google")
    assert again.status_code == 200, again.text
    assert lots(services, me["id"]) == [("credit", "promotional", CREDITS, CREDITS)]
    assert len(claims(services)) == 1


def test_two_attempts_at_once_grant_once(services: Any) -> None:
    user_id = uuid.uuid4()
    services.ledger.open_account(user_id)
    barrier = threading.Barrier(4)
    results: list[int | None] = []

    def attempt() -> None:
        barrier.wait(timeout=30)
        results.append(
            signup.grant_signup_credits(
                services.engine, services.ledger, services.settings, user_id, "race@example.com"
            )
        )

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results.count(None) == 3
    assert lots(services, user_id) == [("credit", "promotional", CREDITS, CREDITS)]


def test_none_configured_or_never_expiring(services: Any) -> None:
    user_id = uuid.uuid4()
    services.ledger.open_account(user_id)
    off = services.settings.model_copy(update={"signup_credits": 0})
    assert (
        signup.grant_signup_credits(services.engine, services.ledger, off, user_id, "a@example.com") is None
    )
    assert claims(services) == [] and lots(services, user_id) == []
    forever = services.settings.model_copy(update={"signup_credits": 3, "signup_credits_expire_days": 0})
    assert signup.grant_signup_credits(services.engine, services.ledger, forever, user_id, "a@example.com")
    [lot] = services.ledger.account(user_id).lots.values()
    assert (lot["amount"], lot["category"], lot["expires_at"]) == (3, "promotional", None)
