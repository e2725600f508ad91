"""Helpers of the auth and users API tests: problem checks, row counts, sign-up and sign-in."""

from __future__ import annotations

import uuid
from typing import Any

import jwt
from sqlalchemy import func, select

from command_api.users.models import OAuthIdentity, RefreshToken, User

API = "/api/v1"
PASSWORD = "correct horse battery"


def is_problem(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body
    return body


def counts(services: Any) -> tuple[int, int, int]:
    """Users, refresh tokens, OAuth identities in the database."""
    with services.sessions() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(model))
            for model in (User, RefreshToken, OAuthIdentity)
        )


def stored_user(services: Any, user_id: str) -> User:
    with services.sessions() as session:
        user = session.get(User, uuid.UUID(user_id))
        assert user is not None
        return user


def register(client: Any, email: str, **extra: Any) -> dict[str, Any]:
    response = client.post(f"{API}/auth/register", json={"email": email, "password": PASSWORD, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def login(client: Any, email: str, password: str = PASSWORD) -> Any:
    return client.post(f"{API}/auth/login", json={"email": email, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def user_id_of(access_token: str) -> str:
    payload = jwt.decode(access_token, options={"verify_signature": False})
    return str(payload["sub"])


def refresh(client: Any, token: str) -> Any:
    return client.post(f"{API}/auth/refresh", json={"refresh_token": token})


def wide(text: str) -> str:
    """``text`` in full-width forms (``wide("a")`` is U+FF41): look-alikes of ASCII addresses."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
