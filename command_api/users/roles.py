"""Stored roles. ``admin`` is the only one: the operator grants and removes it on the server's
database (``vto admin add|remove|list``, in ``infra/cli.py``); an email address alone, whoever
registered it, never makes an admin. The API checks the stored role on every admin request
(``command_api.deps.admin_user``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from command_api.users import repository
from command_api.users.emails import canonical_email
from command_api.users.errors import NoLiveUser, UnverifiedEmail
from command_api.users.models import ADMIN, User

PLAIN_USER = "user"  # what ``roles`` shows for an account holding no stored role


@dataclass(frozen=True)
class Admin:
    user: User
    granted_at: datetime
    granted_by: str | None


def _live_user(session: Session, email: str) -> User:
    user = repository.live_user_by_email(session, email)
    if user is None:
        raise NoLiveUser(canonical_email(email))
    return user


def add_admin(
    session: Session, email: str, granted_by: str | None, *, allow_unverified: bool = False
) -> tuple[User, bool]:
    """Give the live account of ``email`` the admin role; (user, newly granted).
    ``NoLiveUser`` for an email no live account has (unregistered or deleted);
    ``UnverifiedEmail`` for an account whose owner never proved the address (anyone can
    register any address), unless ``allow_unverified``."""
    user = _live_user(session, email)
    if user.email_verified_at is None and not allow_unverified:
        raise UnverifiedEmail(user.email)
    return user, repository.add_role(session, user.id, ADMIN, granted_by)


def remove_admin(session: Session, email: str) -> tuple[User, bool]:
    """Take the admin role from the live account of ``email``; (user, it was an admin)."""
    user = _live_user(session, email)
    return user, repository.remove_role(session, user.id, ADMIN)


def admins(session: Session) -> list[Admin]:
    """The live accounts holding the admin role, by email."""
    return [Admin(*row) for row in repository.live_users_with_role(session, ADMIN)]


def is_admin(session: Session, user: User) -> bool:
    return repository.has_role(session, user.id, ADMIN)


def roles(session: Session, user: User) -> list[str]:
    """The user's stored roles, or ``["user"]`` when they hold none."""
    return repository.roles_of(session, user.id) or [PLAIN_USER]
