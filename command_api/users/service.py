"""The caller's own account: profile changes and soft delete."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from command_api.auth.service import revoke_all
from command_api.users.models import User
from command_api.users.roles import roles
from command_api.users.schemas import UserOut, UserPatch


def user_out(session: Session, user: User) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        email_verified=user.email_verified_at is not None,
        name=user.name,
        language=user.language,
        roles=roles(session, user),
        created_at=user.created_at,
    )


def update_profile(session: Session, user: User, patch: UserPatch) -> User:
    """Apply the fields present in the body (``name: null`` clears the name)."""
    if "name" in patch.model_fields_set:
        user.name = patch.name
    if "language" in patch.model_fields_set and patch.language is not None:
        user.language = patch.language
    session.flush()
    return user


def soft_delete(session: Session, user: User) -> None:
    """Mark the account deleted and stop every token it holds; its data (projects, ledger,
    identities) is kept. The email is free again for a new, unrelated account."""
    now = datetime.now(UTC)
    user.deleted_at = now
    user.token_version += 1  # every access and refresh token carries the old version
    revoke_all(session, user.id, now)
    session.flush()
