"""Mailed links through a real SMTP server (aiosmtpd): email verification on registration and
on email change, password reset, password change, and what each of them ends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from command_api.auth.mail_tokens import digest
from command_api.ops.metrics import REGISTRY
from command_api.users.models import MailToken, User
from infra.mail import parse_smtp_url
from infra.settings import Settings
from tests.api_factories import make_user
from tests.auth_helpers import API, PASSWORD, bearer, is_problem, login, refresh, register, wide
from tests.mail_fixtures import Inbox, free_port, link_token, smtp_server  # noqa: F401  (fixture)

NEW_PASSWORD = "a new horse battery"


@pytest.fixture
def api_settings(tmp_path: Path, smtp_server: Inbox) -> Settings:  # noqa: F811
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path / "data",
        smtp_url=smtp_server.url,
        mail_from="VTO <no-reply@vto.example>",
        app_url="https://app.vto.example",
        mail_min_interval_s=0,
        mail_max_per_recipient=100,  # the limits have tests of their own (at the end)
        mail_max_per_client_address=100,
    )


def me(client: Any, token: str) -> Any:
    return client.get(f"{API}/users/me", headers=bearer(token))


def verify(client: Any, token: str, access: str | None) -> Any:
    headers = bearer(access) if access else {}
    return client.post(f"{API}/auth/verify-email", json={"token": token}, headers=headers)


def signed_in(client: Any, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = login(client, email, password)
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


def expire_tokens(services: Any, email: str) -> None:
    with services.sessions() as session:
        session.execute(
            update(MailToken)
            .where(MailToken.email == email)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        session.commit()


# --- verification -----------------------------------------------------------------------------
def test_registration_mails_a_link_that_verifies_the_email_once(
    client: Any,
    services: Any,
    smtp_server: Inbox,  # noqa: F811
) -> None:
    created = register(client, "New@Example.com")
    assert created["email_verified"] is False
    [message] = smtp_server.messages
    assert (message["To"], message["From"]) == ("new@example.com", "VTO <no-reply@vto.example>")
    assert message["Subject"] == "Confirm your email address"
    assert smtp_server.envelopes == [("no-reply@vto.example", ["new@example.com"])]
    token = smtp_server.token("new@example.com")
    assert f"https://app.vto.example/verify-email?token={token}" in message.get_content()
    with services.sessions() as session:  # only the hash is stored
        [row] = session.scalars(select(MailToken)).all()
        assert row.token_hash == digest(token) and token not in row.token_hash
        assert (row.purpose, row.email, row.used_at) == ("verify_email", "new@example.com", None)

    access = signed_in(client, "new@example.com")["access_token"]
    register(client, "other@example.com")
    other = signed_in(client, "other@example.com")["access_token"]
    is_problem(verify(client, token, other), 400, "invalid_mail_token")  # another account's link
    is_problem(verify(client, token, None), 401)  # the link is followed signed in
    is_problem(verify(client, "not-a-token", access), 400, "invalid_mail_token")
    assert me(client, access).json()["email_verified"] is False

    assert verify(client, token, access).status_code == 204
    assert me(client, access).json()["email_verified"] is True
    reused = is_problem(verify(client, token, access), 400, "invalid_mail_token")
    assert "already used" in reused["detail"]
    # verified: a resend sends nothing
    assert client.post(f"{API}/auth/verify-email/resend", headers=bearer(access)).status_code == 202
    assert len(smtp_server.to("new@example.com")) == 1


def test_an_expired_link_is_refused_and_a_resent_one_works(
    client: Any,
    services: Any,
    smtp_server: Inbox,  # noqa: F811
) -> None:
    register(client, "late@example.com")
    first = smtp_server.token("late@example.com")
    access = signed_in(client, "late@example.com")["access_token"]
    expire_tokens(services, "late@example.com")
    expired = is_problem(verify(client, first, access), 400, "invalid_mail_token")
    assert "expired" in expired["detail"]

    is_problem(client.post(f"{API}/auth/verify-email/resend"), 401)
    assert client.post(f"{API}/auth/verify-email/resend", headers=bearer(access)).status_code == 202
    second = smtp_server.token("late@example.com")
    assert second != first
    # one mail of a kind per account per interval: a second resend right away sends nothing
    services.settings.mail_min_interval_s = 3600
    assert client.post(f"{API}/auth/verify-email/resend", headers=bearer(access)).status_code == 202
    assert len(smtp_server.to("late@example.com")) == 2
    assert verify(client, second, access).status_code == 204
    assert me(client, access).json()["email_verified"] is True


# --- password reset ---------------------------------------------------------------------------
def test_forgot_answers_202_for_any_email_and_mails_only_accounts(
    client: Any,
    services: Any,
    smtp_server: Inbox,  # noqa: F811
) -> None:
    register(client, "known@example.com")
    before = len(smtp_server.messages)
    unknown = client.post(f"{API}/auth/password/forgot", json={"email": "nobody@example.com"})
    known = client.post(f"{API}/auth/password/forgot", json={"email": " Known@Example.com "})
    assert (unknown.status_code, known.status_code) == (202, 202)
    assert (unknown.content, unknown.headers.get("content-type")) == (
        known.content,
        known.headers.get("content-type"),
    )
    assert [m["To"] for m in smtp_server.messages[before:]] == ["known@example.com"]
    assert smtp_server.messages[-1]["Subject"] == "Reset your password"
    assert "/reset-password?token=" in smtp_server.messages[-1].get_content()
    with services.sessions() as session:
        assert session.scalar(select(MailToken).where(MailToken.email == "nobody@example.com")) is None
    is_problem(client.post(f"{API}/auth/password/forgot", json={"email": "a\u0000@example.com"}), 422)


def test_reset_ends_every_session_and_every_other_reset_link(
    client: Any,
    services: Any,
    smtp_server: Inbox,  # noqa: F811
) -> None:
    register(client, "reset@example.com")
    laptop, phone = signed_in(client, "reset@example.com"), signed_in(client, "reset@example.com")
    for _ in range(2):
        assert (
            client.post(f"{API}/auth/password/forgot", json={"email": "reset@example.com"}).status_code == 202
        )
    older, newer = smtp_server.to("reset@example.com")[1:]
    older_token, newer_token = link_token(older), link_token(newer)

    for body in [{"token": newer_token, "password": "short"}, {"token": newer_token}]:
        is_problem(client.post(f"{API}/auth/password/reset", json=body), 422)
    reset = client.post(f"{API}/auth/password/reset", json={"token": newer_token, "password": NEW_PASSWORD})
    assert reset.status_code == 204, reset.text

    for session in (laptop, phone):
        is_problem(me(client, session["access_token"]), 401)
        is_problem(refresh(client, session["refresh_token"]), 401)
    is_problem(login(client, "reset@example.com"), 401)
    fresh = signed_in(client, "reset@example.com", NEW_PASSWORD)
    assert me(client, fresh["access_token"]).json()["email_verified"] is True  # the link reached it
    for used in (newer_token, older_token):  # single use, and the other outstanding link died
        again = client.post(
            f"{API}/auth/password/reset", json={"token": used, "password": "x" + NEW_PASSWORD}
        )
        is_problem(again, 400, "invalid_mail_token")
    signed_in(client, "reset@example.com", NEW_PASSWORD)


def test_an_account_without_a_password_sets_one_by_reset(
    client: Any,
    services: Any,
    smtp_server: Inbox,  # noqa: F811
) -> None:
    social = make_user(services, "social@example.com")  # as a Google sign-in makes it: no password
    is_problem(login(client, "social@example.com", NEW_PASSWORD), 401)
    client.post(f"{API}/auth/password/forgot", json={"email": "social@example.com"})
    token = smtp_server.token("social@example.com")
    expire_tokens(services, "social@example.com")
    expired = client.post(f"{API}/auth/password/reset", json={"token": token, "password": NEW_PASSWORD})
    assert "expired" in is_problem(expired, 400, "invalid_mail_token")["detail"]
    client.post(f"{API}/auth/password/forgot", json={"email": "social@example.com"})
    token = smtp_server.token("social@example.com")
    assert (
        client.post(f"{API}/auth/password/reset", json={"token": token, "password": NEW_PASSWORD}).status_code
        == 204
    )
    assert signed_in(client, "social@example.com", NEW_PASSWORD)["access_token"]
    is_problem(me(client, social.token), 401)


# --- signed-in changes ------------------------------------------------------------------------
def test_password_change_ends_the_other_sessions_and_carries_the_callers_over(
    client: Any,
    services: Any,
    smtp_server: Inbox,  # noqa: F811
) -> None:
    register(client, "change@example.com")
    mine, other = signed_in(client, "change@example.com"), signed_in(client, "change@example.com")
    client.post(f"{API}/auth/password/forgot", json={"email": "change@example.com"})
    pending_reset = smtp_server.token("change@example.com")
    path, headers = f"{API}/users/me/password", bearer(mine["access_token"])

    wrong = client.post(
        path, json={"current_password": "not it", "new_password": NEW_PASSWORD}, headers=headers
    )
    is_problem(wrong, 403, "wrong_password")
    is_problem(
        client.post(path, json={"current_password": PASSWORD, "new_password": "short"}, headers=headers), 422
    )
    is_problem(client.post(path, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}), 401)
    assert login(client, "change@example.com").status_code == 200  # nothing changed so far

    changed = client.post(
        path, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=headers
    )
    assert changed.status_code == 204, changed.text
    is_problem(me(client, other["access_token"]), 401)
    is_problem(refresh(client, other["refresh_token"]), 401)
    is_problem(me(client, mine["access_token"]), 401)  # every access token stops ...
    carried = refresh(client, mine["refresh_token"])  # ... the caller's sign-in gives the next pair
    assert carried.status_code == 200, carried.text
    assert me(client, carried.json()["access_token"]).status_code == 200
    assert refresh(client, carried.json()["refresh_token"]).status_code == 200
    is_problem(login(client, "change@example.com"), 401)
    signed_in(client, "change@example.com", NEW_PASSWORD)
    reset = client.post(f"{API}/auth/password/reset", json={"token": pending_reset, "password": "x" * 12})
    is_problem(reset, 400, "invalid_mail_token")

    social = make_user(services, "nopassword@example.com")
    no_password = client.post(
        path, json={"current_password": "anything", "new_password": NEW_PASSWORD}, headers=social.headers
    )
    is_problem(no_password, 409, "password_not_set")


def test_email_change_applies_when_the_new_address_confirms(
    client: Any,
    services: Any,
    smtp_server: Inbox,  # noqa: F811
) -> None:
    created = register(client, "old@example.com")
    registration_link = smtp_server.token("old@example.com")
    access = signed_in(client, "old@example.com")["access_token"]
    path, headers = f"{API}/users/me/email", bearer(access)
    register(client, "taken@example.com")

    is_problem(client.post(path, json={"email": "new@example.com", "password": "nope"}, headers=headers), 403)
    is_problem(
        client.post(path, json={"email": "Taken@example.com", "password": PASSWORD}, headers=headers), 409
    )
    is_problem(
        client.post(path, json={"email": "old@example.com", "password": PASSWORD}, headers=headers), 409
    )
    is_problem(client.post(path, json={"email": "not an email", "password": PASSWORD}, headers=headers), 422)
    asked = client.post(path, json={"email": "New@Example.com", "password": PASSWORD}, headers=headers)
    assert asked.status_code == 202, asked.text
    [message] = smtp_server.to("new@example.com")
    assert message["Subject"] == "Confirm your new email address"
    assert me(client, access).json()["email"] == "old@example.com"  # not before the link

    assert verify(client, smtp_server.token("new@example.com"), access).status_code == 204
    after = me(client, access).json()
    assert (after["id"], after["email"], after["email_verified"]) == (created["id"], "new@example.com", True)
    assert login(client, "new@example.com").status_code == 200
    is_problem(login(client, "old@example.com"), 401)
    is_problem(verify(client, registration_link, access), 400, "invalid_mail_token")  # sent to the old one

    # taken meanwhile: 409 when the link is followed, and the account keeps its address
    asked = client.post(path, json={"email": "race@example.com", "password": PASSWORD}, headers=headers)
    assert asked.status_code == 202
    change_link = smtp_server.token("race@example.com")
    register(client, "race@example.com")
    is_problem(verify(client, change_link, access), 409, "email_taken")
    assert me(client, access).json()["email"] == "new@example.com"


def test_look_alike_addresses_are_one_address_for_reset_and_email_change(
    client: Any,
    services: Any,
    smtp_server: Inbox,  # noqa: F811
) -> None:
    register(client, "owner@example.com")
    register(client, "kim@bücher.example")
    access = signed_in(client, "owner@example.com")["access_token"]
    path, headers = f"{API}/users/me/email", bearer(access)
    for look_alike in [
        f"{wide('o')}wner@example.com",
        f"OWNER@{wide('e')}xample.com",
    ]:  # its own address, spelt otherwise
        changed = client.post(path, json={"email": look_alike, "password": PASSWORD}, headers=headers)
        is_problem(changed, 409, "email_unchanged")
    for look_alike in [f"{wide('k')}im@bücher.example", "kim@XN--BCHER-KVA.example"]:  # another account's
        changed = client.post(path, json={"email": look_alike, "password": PASSWORD}, headers=headers)
        is_problem(changed, 409, "email_taken")
    sent = len(smtp_server.messages)
    assert (
        client.post(
            f"{API}/auth/password/forgot", json={"email": f"{wide('k')}im@xn--bcher-kva.example"}
        ).status_code
        == 202
    )
    [reset] = smtp_server.messages[sent:]
    assert reset["Subject"] == "Reset your password"
    assert reset["To"] == "kim@xn--bcher-kva.example"  # the ASCII form of the one account's address


def test_a_mail_failure_is_logged_and_counted_and_the_account_is_kept(
    client: Any, services: Any, caplog: pytest.LogCaptureFixture
) -> None:
    services.mailer.smtp = parse_smtp_url(f"smtp://127.0.0.1:{free_port()}")  # nobody listens
    failures = REGISTRY.get_sample_value("vto_mail_failures_total") or 0.0
    created = register(client, "unlucky@example.com")
    assert REGISTRY.get_sample_value("vto_mail_failures_total") == failures + 1
    assert "mail to unlucky@example.com could not be delivered" in caplog.text
    with services.sessions() as session:
        assert session.get(User, uuid.UUID(created["id"])) is not None
    assert (
        client.post(f"{API}/auth/password/forgot", json={"email": "unlucky@example.com"}).status_code == 202
    )
    assert REGISTRY.get_sample_value("vto_mail_failures_total") == failures + 2


# --- mail limits: per account, per recipient, per client address -------------------------------
def test_repeated_registrations_of_one_address_mail_it_once(
    client: Any,
    services: Any,
    smtp_server: Inbox,  # noqa: F811
) -> None:
    """Attack 4: register, log in, delete the account, five times over with a victim's
    address: five mails reached the victim (the limit was per account, each a new one)."""
    for _ in range(5):
        created = register(client, "victim@example.com")
        assert created["email_verified"] is False  # the account works, unverified
        access = signed_in(client, "victim@example.com")["access_token"]
        gone = client.request(
            "DELETE", f"{API}/users/me", json={"password": PASSWORD}, headers=bearer(access)
        )
        assert gone.status_code == 204
    assert len(smtp_server.to("victim@example.com")) == 1


def test_accounts_asking_for_one_new_address_mail_it_once(
    client: Any,
    services: Any,
    smtp_server: Inbox,  # noqa: F811
) -> None:
    """Attack 4: four accounts each asking to change their email to the victim's: four mails."""
    for n in range(4):
        make_user(services, f"asker{n}@example.com", password=PASSWORD)
        access = signed_in(client, f"asker{n}@example.com")["access_token"]
        body = {"email": "victim@example.com", "password": PASSWORD}
        asked = client.post(f"{API}/users/me/email", json=body, headers=bearer(access))
        assert asked.status_code == 202, asked.text  # the same answer: nothing tells it was held
    assert len(smtp_server.to("victim@example.com")) == 1
    # The account that got the link may ask again (a lost mail), within the other limits.
    access = signed_in(client, "asker0@example.com")["access_token"]
    again = {"email": "victim@example.com", "password": PASSWORD}
    assert client.post(f"{API}/users/me/email", json=again, headers=bearer(access)).status_code == 202
    assert len(smtp_server.to("victim@example.com")) == 2


def test_mail_is_limited_per_recipient_and_per_client_address(
    client: Any,
    services: Any,
    smtp_server: Inbox,  # noqa: F811
) -> None:
    services.settings.mail_max_per_recipient = 3
    services.settings.mail_max_per_client_address = 6
    make_user(services, "target@example.com")
    for _ in range(5):  # forgot needs no account of the caller's, and answers 202 every time
        forgot = client.post(f"{API}/auth/password/forgot", json={"email": "target@example.com"})
        assert forgot.status_code == 202
    assert len(smtp_server.to("target@example.com")) == 3
    for n in range(5):  # one mail each to many addresses, from one client address
        make_user(services, f"sprayed{n}@example.com")
        assert (
            client.post(f"{API}/auth/password/forgot", json={"email": f"sprayed{n}@example.com"}).status_code
            == 202
        )
    assert sum(len(smtp_server.to(f"sprayed{n}@example.com")) for n in range(5)) == 3  # 6 in all
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(MailToken)) == 6
