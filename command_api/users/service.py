"""The caller's own account: profile changes, its sign-in sessions and its (soft) deletion."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from command_api.auth import sessions
from command_api.auth.errors import PasswordNotSet, ReauthenticationRequired
from command_api.auth.service import revoke_all, revoke_family
from command_api.auth.throttle import PasswordGuard
from command_api.auth.verification import check_password
from command_api.users.errors import SessionNotFound
from command_api.users.models import User
from command_api.users.roles import roles
from command_api.users.schemas import SessionOut, UserOut, UserPatch


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


def delete_account(
    session: Session,
    guard: PasswordGuard,
    user: User,
    family: uuid.UUID | None,
    password: str | None,
    max_age_s: int,
) -> None:
    """The owner must be there: an account with a password gives it (counted like a login:
    403 ``wrong_password``, 429); one without (made by a provider sign-in) must have signed in
    with its provider in the last ``max_age_s`` seconds, in the session that asks. Else 403
    ``reauthentication_required``. Then ``soft_delete``."""
    if user.password_hash is not None:
        if password is None:
            raise ReauthenticationRequired('deleting the account needs its password: send {"password": ...}')
        check_password(guard, user, password)
    elif password is not None:
        raise PasswordNotSet()
    elif not sessions.signed_in_with_provider_since(session, user.id, family, max_age_s):
        raise ReauthenticationRequired(
            "this account has no password: sign in with Google or Kakao again, then delete it "
            f"within {max_age_s // 60 or 1} minute(s) with the new access token"
        )
    soft_delete(session, user)


def soft_delete(session: Session, user: User) -> None:
    """Mark the account deleted and stop every token it holds; its data (projects, ledger,
    identities) is kept. The email is free again for a new, unrelated account."""
    now = datetime.now(UTC)
    user.deleted_at = now
    user.token_version += 1  # every access and refresh token carries the old version
    revoke_all(session, user.id, now)
    session.flush()


def session_page(
    session: Session, user: User, current: uuid.UUID | None, limit: int, cursor: str | None
) -> tuple[list[SessionOut], str | None]:
    rows, next_cursor = sessions.live_page(session, user.id, limit, cursor)
    items = [SessionOut.model_validate(row).model_copy(update={"current": row.id == current}) for row in rows]
    return items, next_cursor


def end_session(session: Session, user: User, session_id: uuid.UUID) -> None:
    """End one of the caller's live sessions (its tokens stop at once); 404 otherwise."""
    if not sessions.is_live(session, user.id, session_id) or not revoke_family(session, user.id, session_id):
        raise SessionNotFound()
