"""The single-use, expiring tokens that mailed links carry (table ``mail_tokens``).

A token is 256 random bits; only its SHA-256 is stored. It works once, until it expires, for
one purpose (``verify_email``, ``reset_password``, ``change_email``) of one account."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from command_api.auth.errors import InvalidMailToken
from command_api.users.models import MailToken, User

TOKEN_BYTES = 32


def _now() -> datetime:
    return datetime.now(UTC)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(
    session: Session, user: User, purpose: str, email: str, ttl_s: int, client_address: str | None = None
) -> str:
    """A new token for ``email`` (returned in clear, stored as its hash), asked for from
    ``client_address``."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    session.add(
        MailToken(
            token_hash=digest(token),
            user_id=user.id,
            purpose=purpose,
            email=email,
            client_address=client_address,
            expires_at=_now() + timedelta(seconds=ttl_s),
        )
    )
    session.flush()
    return token


def consume(session: Session, token: str, purposes: Sequence[str]) -> MailToken:
    """Use the token up (atomically: of two concurrent uses one wins) or raise 400
    ``invalid_mail_token`` saying why."""
    now = _now()
    hashed = digest(token)
    used = session.scalars(
        update(MailToken)
        .where(
            MailToken.token_hash == hashed,
            MailToken.purpose.in_(purposes),
            MailToken.used_at.is_(None),
            MailToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(MailToken)
    ).first()
    if used is not None:
        return used
    row = session.scalars(select(MailToken).where(MailToken.token_hash == hashed)).first()
    if row is None or row.purpose not in purposes:
        raise InvalidMailToken("this link is not valid")
    if row.used_at is not None:
        raise InvalidMailToken("this link was already used, or a later change replaced it")
    raise InvalidMailToken("this link has expired; ask for a new one")


def revoke(
    session: Session, user_id: uuid.UUID, purposes: Sequence[str] | None = None, now: datetime | None = None
) -> None:
    """Every outstanding token of the user (of these purposes) stops working."""
    query = update(MailToken).where(MailToken.user_id == user_id, MailToken.used_at.is_(None))
    if purposes is not None:
        query = query.where(MailToken.purpose.in_(purposes))
    session.execute(query.values(used_at=now or _now()))
