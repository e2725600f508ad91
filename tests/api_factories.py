"""Factories for API tests: users with tokens, built directly on the services."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from command_api.auth import passwords, tokens
from command_api.auth.service import issue_tokens
from command_api.auth.sessions import SignIn
from command_api.users import repository
from command_api.users.models import ADMIN, User


@dataclass
class Caller:
    user: User
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def id(self) -> uuid.UUID:
        return self.user.id


def make_user(
    services: Any,
    email: str | None = None,
    *,
    admin: bool = False,
    name: str = "Test User",
    verified: bool = False,
    password: str | None = None,
    sign_in: str | None = None,
) -> Caller:
    """A live user row (and its ledger account) plus a valid access token; ``admin``: the user
    holds the stored admin role (as ``vto admin add`` gives it); ``verified``: its email counts
    as proven; ``password``: the account has one (hashed: slower); ``sign_in``: the token is
    that of a sign-in session started now with this method (``password``, ``google``,
    ``kakao``), as ``/auth/login`` or a provider sign-in gives (else a token with no session)."""
    email = email or f"{'admin' if admin else 'user'}-{uuid.uuid4().hex[:12]}@example.com"
    with services.sessions() as session:
        hashed = passwords.hash_password(password) if password is not None else None
        user = User(email=email.lower(), name=name, language="en", password_hash=hashed, token_version=0)
        user.email_verified_at = datetime.now(UTC) if verified else None
        session.add(user)
        session.flush()
        if admin:
            repository.add_role(session, user.id, ADMIN, granted_by="tests")
        session.commit()
    services.ledger.open_account(user.id)
    if sign_in is None:
        token, _ = tokens.issue(services.secret, user.id, 0, "access", tokens.ACCESS_TTL)
    else:
        with services.sessions() as session:
            token = issue_tokens(
                session, services.secret, user, sign_in=SignIn(sign_in, "tests", None)
            ).access_token
            session.commit()
    return Caller(user, token)
