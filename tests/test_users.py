"""/users/me: read, update, soft delete (and what a deleted account can still do: nothing)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from command_api.auth.service import issue_tokens
from command_api.auth.sessions import SignIn
from command_api.users.models import RefreshToken, SignInSession, User
from tests.api_factories import make_user
from tests.auth_helpers import API, PASSWORD, bearer, is_problem, login, refresh, register, stored_user


def delete_me(client: Any, access: str, body: dict[str, Any] | None = None) -> Any:
    return client.request("DELETE", f"{API}/users/me", json=body, headers=bearer(access))


def sessions_of(client: Any, access: str) -> list[dict[str, Any]]:
    response = client.get(f"{API}/users/me/sessions", headers=bearer(access))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_me_reads_and_patches_the_profile(client: Any, services: Any) -> None:
    created = register(client, "me@example.com", name="Before")
    headers = bearer(login(client, "me@example.com").json()["access_token"])
    assert client.get(f"{API}/users/me", headers=headers).json() == created

    patched = client.patch(f"{API}/users/me", json={"name": " After ", "language": "ja"}, headers=headers)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["language"]) == ("After", "ja")
    only_language = client.patch(f"{API}/users/me", json={"language": "zh"}, headers=headers).json()
    assert (only_language["name"], only_language["language"]) == ("After", "zh")
    cleared = client.patch(f"{API}/users/me", json={"name": None}, headers=headers).json()
    assert (cleared["name"], cleared["language"]) == (None, "zh")
    assert client.patch(f"{API}/users/me", json={}, headers=headers).json() == cleared
    stored = stored_user(services, created["id"])
    assert (stored.name, stored.language, stored.email) == (None, "zh", "me@example.com")

    client.patch(f"{API}/users/me", json={"name": "Kept", "language": "ko"}, headers=headers)
    for body in [
        {"language": "fr"},
        {"language": "KO"},
        {"language": None},
        {"language": 1},
        {"name": "n" * 10_000},
        {"name": ""},
        {"name": "   "},
        {"name": ["a"]},
        {"email": "other@example.com"},
        {"roles": ["admin"]},
        ["name"],
        "name",
    ]:
        is_problem(client.patch(f"{API}/users/me", json=body, headers=headers), 422, "validation_error")
    malformed = client.patch(
        f"{API}/users/me", content=b'{"name": "x"', headers={**headers, "content-type": "application/json"}
    )
    is_problem(malformed, 422)
    stored = stored_user(services, created["id"])
    assert (stored.name, stored.language, stored.email) == ("Kept", "ko", "me@example.com")

    for method in ("get", "patch", "delete"):
        kwargs: dict[str, Any] = {"json": {"name": "x"}} if method == "patch" else {}
        is_problem(getattr(client, method)(f"{API}/users/me", **kwargs), 401, "unauthorized")
        bad = getattr(client, method)(f"{API}/users/me", headers=bearer("garbage"), **kwargs)
        is_problem(bad, 401, "unauthorized")
    assert stored_user(services, created["id"]).deleted_at is None

    admin = make_user(services, admin=True)
    assert client.get(f"{API}/users/me", headers=admin.headers).json()["roles"] == ["admin"]


def test_soft_delete_ends_every_session_and_frees_the_email(client: Any, services: Any) -> None:
    old = register(client, "leaver@example.com", name="Leaver")
    first = login(client, "leaver@example.com").json()
    second = login(client, "leaver@example.com").json()
    services.ledger.grant_credits(uuid.UUID(old["id"]), 5, "kept after deletion")

    deleted = delete_me(client, first["access_token"], {"password": PASSWORD})
    assert deleted.status_code == 204 and deleted.content == b""

    for pair in (first, second):
        is_problem(client.get(f"{API}/users/me", headers=bearer(pair["access_token"])), 401, "unauthorized")
        is_problem(refresh(client, pair["refresh_token"]), 401)
    is_problem(login(client, "leaver@example.com"), 401, "invalid_credentials")
    is_problem(delete_me(client, second["access_token"], {"password": PASSWORD}), 401)

    with services.sessions() as session:
        row = session.get(User, uuid.UUID(old["id"]))
        assert row is not None and row.deleted_at is not None
        assert (row.token_version, row.name, row.email) == (1, "Leaver", "leaver@example.com")
        tokens = session.scalars(select(RefreshToken).where(RefreshToken.user_id == row.id)).all()
        assert len(tokens) == 2 and all(t.revoked_at is not None for t in tokens)
        ended = session.scalars(select(SignInSession).where(SignInSession.user_id == row.id)).all()
        assert len(ended) == 2 and all(s.ended_at is not None for s in ended)
    assert services.ledger.account(uuid.UUID(old["id"])).credits == 5  # data kept

    # the email may register again: a new account, unrelated to the old one
    again = register(client, "Leaver@example.com")
    assert again["id"] != old["id"] and again["name"] is None
    pair = login(client, "leaver@example.com").json()
    assert client.get(f"{API}/users/me", headers=bearer(pair["access_token"])).json()["id"] == again["id"]
    assert stored_user(services, old["id"]).deleted_at is not None


def test_sessions_are_listed_and_ended_one_by_one(client: Any, services: Any) -> None:
    """Attack 7: there was no way to see or end a session (refresh tokens live 30 days). Each
    sign-in is a session; ending one stops its refresh token and its access tokens at once
    (every route, the one-statement reads too), and leaves the others alone."""
    register(client, "owner@example.com")
    services.ledger.grant_credits(uuid.UUID(stored_id(services, "owner@example.com")), 3, "test")
    phone = client.post(
        f"{API}/auth/login",
        json={"email": "owner@example.com", "password": PASSWORD},
        headers={"User-Agent": "VTO-Phone/2.1"},
    ).json()
    laptop = client.post(
        f"{API}/auth/login",
        json={"email": "owner@example.com", "password": PASSWORD},
        headers={"User-Agent": "Laptop\x7fBrowser"},  # cleaned like any input (DEL)
    ).json()
    listed = sessions_of(client, laptop["access_token"])
    assert [(s["user_agent"], s["current"], s["method"]) for s in listed] == [
        ("Laptop Browser", True, "password"),
        ("VTO-Phone/2.1", False, "password"),
    ]
    assert {s["client_address"] for s in listed} == {"testclient"}
    assert set(listed[0]) == {
        "id",
        "method",
        "created_at",
        "last_used_at",
        "expires_at",
        "user_agent",
        "client_address",
        "current",
    }
    phone_id = listed[1]["id"]
    # A refresh keeps the session (same id) and moves its last use.
    rotated = refresh(client, phone["refresh_token"]).json()
    after = {s["id"]: s for s in sessions_of(client, laptop["access_token"])}
    assert after[phone_id]["last_used_at"] >= listed[1]["last_used_at"]

    # Nobody else's session can be named (404, like an unknown one); the id must be a UUID.
    stranger = make_user(services)
    ended = client.delete(f"{API}/users/me/sessions/{phone_id}", headers=stranger.headers)
    is_problem(ended, 404, "session_not_found")
    is_problem(
        client.delete(f"{API}/users/me/sessions/{uuid.uuid4()}", headers=bearer(laptop["access_token"])), 404
    )
    is_problem(client.delete(f"{API}/users/me/sessions/nope", headers=bearer(laptop["access_token"])), 422)
    assert client.get(f"{API}/users/me", headers=bearer(rotated["access_token"])).status_code == 200

    ended = client.delete(f"{API}/users/me/sessions/{phone_id}", headers=bearer(laptop["access_token"]))
    assert ended.status_code == 204, ended.text
    for path in ("/users/me", "/points", "/collections"):
        is_problem(client.get(f"{API}{path}", headers=bearer(rotated["access_token"])), 401)
    is_problem(refresh(client, rotated["refresh_token"]), 401)
    assert [s["current"] for s in sessions_of(client, laptop["access_token"])] == [True]
    assert client.get(f"{API}/points", headers=bearer(laptop["access_token"])).status_code == 200
    # Ending it again changes nothing: 404 (it is no longer a session of the caller's).
    again = client.delete(f"{API}/users/me/sessions/{phone_id}", headers=bearer(laptop["access_token"]))
    is_problem(again, 404, "session_not_found")


def test_logout_ends_only_this_session(client: Any, services: Any) -> None:
    register(client, "leaving@example.com")
    first = login(client, "leaving@example.com").json()
    second = login(client, "leaving@example.com").json()
    is_problem(client.post(f"{API}/auth/logout"), 401, "unauthorized")
    out = client.post(f"{API}/auth/logout", headers=bearer(first["access_token"]))
    assert out.status_code == 204 and out.content == b""
    is_problem(client.get(f"{API}/users/me", headers=bearer(first["access_token"])), 401)
    is_problem(client.get(f"{API}/points", headers=bearer(first["access_token"])), 401)
    is_problem(refresh(client, first["refresh_token"]), 401)
    is_problem(client.post(f"{API}/auth/logout", headers=bearer(first["access_token"])), 401)
    assert client.get(f"{API}/users/me", headers=bearer(second["access_token"])).status_code == 200
    assert refresh(client, second["refresh_token"]).status_code == 200


def test_deleting_the_account_needs_the_password(client: Any, services: Any) -> None:
    """Attack 7: ``DELETE /users/me`` needed no password: a stolen 15-minute access token could
    delete the account."""
    created = register(client, "careful@example.com")
    access = login(client, "careful@example.com").json()["access_token"]
    is_problem(delete_me(client, access), 403, "reauthentication_required")
    is_problem(delete_me(client, access, {}), 403, "reauthentication_required")
    is_problem(delete_me(client, access, {"password": "not the password"}), 403, "wrong_password")
    for bad in [{"password": ""}, {"password": 5}, {"password": "x" * 300}, {"other": 1}, ["x"]]:
        is_problem(delete_me(client, access, bad), 422, "validation_error")
    assert stored_user(services, created["id"]).deleted_at is None
    assert delete_me(client, access, {"password": PASSWORD}).status_code == 204
    assert stored_user(services, created["id"]).deleted_at is not None


def test_an_account_without_a_password_is_deleted_after_a_fresh_provider_sign_in(
    client: Any, services: Any
) -> None:
    """No password to give: a sign-in with the provider in the last
    ``VTO_REAUTHENTICATION_MAX_AGE_S`` (5 minutes) proves the owner is there; a token without
    such a sign-in (an older session, or none) is refused."""
    owner = make_user(services)  # no password, no sign-in behind its token
    is_problem(
        client.request("DELETE", f"{API}/users/me", headers=owner.headers), 403, "reauthentication_required"
    )
    with services.sessions() as session:
        user = session.get(User, owner.id)
        assert user is not None
        pair = issue_tokens(session, services.secret, user, sign_in=SignIn("google", None, "testclient"))
        session.commit()
    no_password = delete_me(client, pair.access_token, {"password": "anything"})
    is_problem(no_password, 409, "password_not_set")
    with services.sessions() as session:  # the sign-in is six minutes old
        session.execute(
            update(SignInSession)
            .where(SignInSession.user_id == owner.id)
            .values(created_at=SignInSession.created_at - timedelta(minutes=6))
        )
        session.commit()
    is_problem(delete_me(client, pair.access_token), 403, "reauthentication_required")
    with services.sessions() as session:
        session.execute(update(SignInSession).values(created_at=datetime.now(UTC)))
        session.commit()
    assert delete_me(client, pair.access_token).status_code == 204
    assert stored_user(services, str(owner.id)).deleted_at is not None


def stored_id(services: Any, email: str) -> str:
    with services.sessions() as session:
        return str(session.scalars(select(User.id).where(User.email == email)).one())
