"""Users, their social-login identities and their refresh tokens."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from infra.orm import Base, CreatedMixin, IdMixin, utcnow


class User(IdMixin, CreatedMixin, Base):
    __tablename__ = "users"
    # One live account per email; a soft-deleted account keeps its row (and email).
    __table_args__ = (
        Index("users_live_email_key", "email", unique=True, postgresql_where=text("deleted_at IS NULL")),
    )

    email: Mapped[str] = mapped_column(String(320))  # lower-cased; unique among live users
    password_hash: Mapped[str | None] = mapped_column(String(256))
    name: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(8), default="en")
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Bumped to revoke every token issued before (soft delete, password change).
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    # When the owner of ``email`` proved it (a mailed link, a password reset, or a provider's
    # verified email); null: unverified.
    email_verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

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
    # Set when a password change carried this sign-in over to the new ``token_version``: the
    # version this token now needs (instead of the one its JWT carries).
    token_version: Mapped[int | None] = mapped_column(Integer)


VERIFY_EMAIL, RESET_PASSWORD, CHANGE_EMAIL = "verify_email", "reset_password", "change_email"


class MailToken(CreatedMixin, Base):
    """A single-use, expiring token sent by mail (only its SHA-256 is stored): verify the
    account's email, reset its password, or move it to the new ``email``."""

    __tablename__ = "mail_tokens"
    __table_args__ = (
        Index("mail_tokens_user_purpose_idx", "user_id", "purpose", "created_at"),
        Index("mail_tokens_email_idx", "email", "created_at"),  # mail limits (0018)
        Index("mail_tokens_client_address_idx", "client_address", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    purpose: Mapped[str] = mapped_column(String(16))
    email: Mapped[str] = mapped_column(String(320))  # where it was sent
    client_address: Mapped[str | None] = mapped_column(String(64))  # who asked (mail limits)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # used or revoked


ADMIN = "admin"  # the one stored role (the table's check constraint lists the roles)


class UserRole(Base):
    """A role the operator granted to a user (``vto admin add EMAIL``); an email address alone
    grants nothing. ``granted_by`` says who granted it (e.g. ``cli``)."""

    __tablename__ = "user_roles"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(Text, primary_key=True)
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    granted_by: Mapped[str | None] = mapped_column(Text)


class SignInSession(Base):
    """One sign-in: the family of refresh tokens it started (``id`` = the family, which every
    access and refresh token of it names as ``fam``). Ending it (logout, ``DELETE
    /users/me/sessions/{id}``, a password change or reset, a refresh token used twice, the
    account deleted) revokes its refresh tokens and stops its access tokens at once."""

    __tablename__ = "sign_in_sessions"
    __table_args__ = (Index("sign_in_sessions_user_idx", "user_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    # How the user signed in: password, google or kakao (null: before sessions were recorded).
    method: Mapped[str | None] = mapped_column(String(16))
    user_agent: Mapped[str | None] = mapped_column(String(256))
    client_address: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # of its newest refresh token
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
