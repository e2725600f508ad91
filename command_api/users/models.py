"""Users, their social-login identities and their refresh tokens."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from infra.db import Base, CreatedMixin, IdMixin


class User(IdMixin, CreatedMixin, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320))  # lower-cased; unique among live users
    password_hash: Mapped[str | None] = mapped_column(String(256))
    name: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(8), default="en")
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Bumped to revoke every token issued before (soft delete, password change).
    token_version: Mapped[int] = mapped_column(Integer, default=0)

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class OAuthIdentity(CreatedMixin, Base):
    """A user's account at a social-login provider, linked by the provider's subject."""

    __tablename__ = "oauth_identities"
    __table_args__ = (UniqueConstraint("provider", "subject"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    provider: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    email: Mapped[str | None] = mapped_column(String(320))


class RefreshToken(CreatedMixin, Base):
    """One issued refresh token (by its JWT id). Rotation: using one marks it used and issues
    the next in the same family; reusing a used one revokes the whole family."""

    __tablename__ = "refresh_tokens"

    jti: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    family: Mapped[uuid.UUID] = mapped_column(index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
