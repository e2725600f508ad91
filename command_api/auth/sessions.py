"""Sign-in sessions (table ``sign_in_sessions``, migration 0014): one per sign-in, whose id is
the refresh-token family every token of that sign-in names (``fam``).

A session is *live* until it ends or its newest refresh token expires. Ending one revokes its
refresh tokens (``command_api.auth.service`` does both together) and stops its access tokens
at once: every check of an access token reads whether its session ended (``own_reads``,
``deps``). Functions here work on the request's session and never commit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ScalarSelect, select, update
from sqlalchemy.orm import Session

from command_api.inputs import without_controls
from command_api.pagination import keyset_page
from command_api.users.models import SignInSession, User

USER_AGENT_MAX = 256
ADDRESS_MAX = 64
PROVIDER_METHODS = frozenset({"google", "kakao"})


@dataclass(frozen=True)
class SignIn:
    """How a session started: ``method`` (``password``, ``google``, ``kakao``), the client's
    ``User-Agent`` and address (as the request gave them)."""

    method: str
    user_agent: str | None
    client_address: str | None


def _now() -> datetime:
    return datetime.now(UTC)


def start(
    session: Session, user_id: uuid.UUID, family: uuid.UUID, sign_in: SignIn, expires_at: datetime
) -> None:
    now = _now()
    agent = (
        without_controls(sign_in.user_agent)[:USER_AGENT_MAX].strip() or None if sign_in.user_agent else None
    )
    session.add(
        SignInSession(
            id=family,
            user_id=user_id,
            method=sign_in.method,
            user_agent=agent,
            client_address=(sign_in.client_address or "")[:ADDRESS_MAX] or None,
            created_at=now,
            last_used_at=now,
            expires_at=expires_at,
        )
    )


def touch(session: Session, family: uuid.UUID, expires_at: datetime) -> None:
    """A refresh: the session was used now, and lives as long as its new refresh token."""
    session.execute(
        update(SignInSession)
        .where(SignInSession.id == family)
        .values(last_used_at=_now(), expires_at=expires_at)
    )


def end(
    session: Session,
    user_id: uuid.UUID,
    *,
    family: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
    now: datetime | None = None,
) -> list[uuid.UUID]:
    """End the user's live session ``family`` (or every one, but ``keep``); the ids ended."""
    query = update(SignInSession).where(SignInSession.user_id == user_id, SignInSession.ended_at.is_(None))
    if family is not None:
        query = query.where(SignInSession.id == family)
    if keep is not None:
        query = query.where(SignInSession.id != keep)
    return list(session.scalars(query.values(ended_at=now or _now()).returning(SignInSession.id)))


def _live(user_id: uuid.UUID) -> list[object]:
    return [
        SignInSession.user_id == user_id,
        SignInSession.ended_at.is_(None),
        SignInSession.expires_at > _now(),
    ]


def live_page(
    session: Session, user_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[SignInSession], str | None]:
    """The user's live sessions, newest sign-in first."""
    query = select(SignInSession).where(*_live(user_id))  # type: ignore[arg-type]
    return keyset_page(session, query, SignInSession, limit, cursor, descending=True)


def is_live(session: Session, user_id: uuid.UUID, family: uuid.UUID) -> bool:
    query = select(SignInSession.id).where(SignInSession.id == family, *_live(user_id))  # type: ignore[arg-type]
    return session.scalar(query) is not None


def ended(family: uuid.UUID) -> ScalarSelect[bool]:
    """A column for a query of ``User``: whether its session ``family`` ended (null for no
    such session of the user's)."""
    return (
        select(SignInSession.ended_at.is_not(None))
        .where(SignInSession.id == family, SignInSession.user_id == User.id)
        .scalar_subquery()
    )


def signed_in_with_provider_since(
    session: Session, user_id: uuid.UUID, family: uuid.UUID | None, max_age_s: int
) -> bool:
    """Whether session ``family`` of the user is live and started with a provider sign-in in
    the last ``max_age_s`` seconds (a fresh proof that the owner is there)."""
    if family is None:
        return False
    row = session.get(SignInSession, family)
    return (
        row is not None
        and row.user_id == user_id
        and row.ended_at is None
        and row.method in PROVIDER_METHODS
        and row.created_at >= _now() - timedelta(seconds=max_age_s)
    )
