"""Queries of the users and user_roles tables."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import RowMapping, delete, exists, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from command_api.users.emails import canonical_email
from command_api.users.models import User, UserRole
from projections.events import EVENTS_TABLE

# What an access token is checked against (the stored token version, whether the user is
# deleted), with the notification position of the user's newest ledger event (the end of the
# user's stream, by its primary key): what the read models must include for read-your-writes.
_TOKEN_STATE = text(
    "SELECT u.token_version, u.deleted_at IS NOT NULL AS deleted, "  # noqa: S608 (a constant table name)
    "(SELECT s.ended_at IS NOT NULL FROM sign_in_sessions s "
    " WHERE s.id = CAST(:family AS uuid) AND s.user_id = u.id) AS session_ended, "
    f"(SELECT e.notification_id FROM {EVENTS_TABLE} e WHERE e.originator_id = u.id "
    " ORDER BY e.originator_version DESC LIMIT 1) AS position "
    "FROM users u WHERE u.id = :id"
)


def live_user_by_email(session: Session, email: str, *, for_update: bool = False) -> User | None:
    """The user (not deleted) with this email, compared in its canonical form (as stored:
    ``command_api.users.emails``). ``for_update``: its row locked until the transaction ends."""
    query = select(User).where(User.email == canonical_email(email), User.deleted_at.is_(None))
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def live_user(session: Session, user_id: uuid.UUID) -> User | None:
    """The user (not deleted) with this id."""
    user = session.get(User, user_id)
    return None if user is None or user.is_deleted else user


def token_state(session: Session, user_id: uuid.UUID, family: uuid.UUID | None) -> RowMapping | None:
    """``token_version``, ``deleted``, ``session_ended`` (whether sign-in session ``family``
    ended; null without one) and the ``position`` of the user's newest ledger event (None
    before their first); None for an unknown id."""
    return session.execute(_TOKEN_STATE, {"id": user_id, "family": family}).mappings().first()


def has_role(session: Session, user_id: uuid.UUID, role: str) -> bool:
    """Whether the live user holds the stored ``role`` (one query; a deleted user has none)."""
    query = select(
        exists().where(
            UserRole.user_id == user_id,
            UserRole.role == role,
            User.id == UserRole.user_id,
            User.deleted_at.is_(None),
        )
    )
    return bool(session.scalar(query))


def roles_of(session: Session, user_id: uuid.UUID) -> list[str]:
    """The stored roles of a user, sorted."""
    query = select(UserRole.role).where(UserRole.user_id == user_id).order_by(UserRole.role)
    return list(session.scalars(query))


def add_role(session: Session, user_id: uuid.UUID, role: str, granted_by: str | None) -> bool:
    """Store the role; False when the user already held it (nothing changes then)."""
    inserted = session.execute(
        insert(UserRole)
        .values(user_id=user_id, role=role, granted_by=granted_by)
        .on_conflict_do_nothing()
        .returning(UserRole.user_id)
    ).first()
    return inserted is not None


def remove_role(session: Session, user_id: uuid.UUID, role: str) -> bool:
    """Remove the role; False when the user did not hold it."""
    removed = session.execute(
        delete(UserRole).where(UserRole.user_id == user_id, UserRole.role == role).returning(UserRole.user_id)
    ).first()
    return removed is not None


def live_users_with_role(session: Session, role: str) -> list[tuple[User, datetime, str | None]]:
    """Live users holding ``role``, by email, with when and by whom it was granted."""
    query = (
        select(User, UserRole.granted_at, UserRole.granted_by)
        .join(UserRole, UserRole.user_id == User.id)
        .where(UserRole.role == role, User.deleted_at.is_(None))
        .order_by(User.email)
    )
    return [(user, granted_at, granted_by) for user, granted_at, granted_by in session.execute(query)]
