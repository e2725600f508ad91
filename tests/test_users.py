"""/users/me: read, update, soft delete (and what a deleted account can still do: nothing)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from command_api.users.models import RefreshToken, User
from tests.api_factories import make_user
from tests.auth_helpers import API, bearer, is_problem, login, refresh, register, stored_user


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

    deleted = client.delete(f"{API}/users/me", headers=bearer(first["access_token"]))
    assert deleted.status_code == 204 and deleted.content == b""

    for pair in (first, second):
        is_problem(client.get(f"{API}/users/me", headers=bearer(pair["access_token"])), 401, "unauthorized")
        is_problem(refresh(client, pair["refresh_token"]), 401)
    is_problem(login(client, "leaver@example.com"), 401, "invalid_credentials")
    is_problem(client.delete(f"{API}/users/me", headers=bearer(second["access_token"])), 401)

    with services.sessions() as session:
        row = session.get(User, uuid.UUID(old["id"]))
        assert row is not None and row.deleted_at is not None
        assert (row.token_version, row.name, row.email) == (1, "Leaver", "leaver@example.com")
        tokens = session.scalars(select(RefreshToken).where(RefreshToken.user_id == row.id)).all()
        assert len(tokens) == 2 and all(t.revoked_at is not None for t in tokens)
    assert services.ledger.account(uuid.UUID(old["id"])).credits == 5  # data kept

    # the email may register again: a new account, unrelated to the old one
    again = register(client, "Leaver@example.com")
    assert again["id"] != old["id"] and again["name"] is None
    pair = login(client, "leaver@example.com").json()
    assert client.get(f"{API}/users/me", headers=bearer(pair["access_token"])).json()["id"] == again["id"]
    assert stored_user(services, old["id"]).deleted_at is not None
