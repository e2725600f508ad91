"""Queries of the users table."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from command_api.users.models import User


def live_user_by_email(session: Session, email: str) -> User | None:
    """The user (not deleted) with this email; emails are stored trimmed and lower-cased."""
    query = select(User).where(User.email == email.strip().lower(), User.deleted_at.is_(None))
    return session.scalars(query).first()


def live_user(session: Session, user_id: uuid.UUID) -> User | None:
    """The user (not deleted) with this id."""
    user = session.get(User, user_id)
    return None if user is None or user.is_deleted else user
