"""The catalog tables (created by migration 0004_catalog; share roles by 0007, invitations by
0012): collections, projects, project shares and invitations, products and assets. Image bytes
live in the object storage under ``storage_key``."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from infra.orm import Base, CreatedMixin, IdMixin, utcnow


class Collection(IdMixin, CreatedMixin, Base):
    """A folder of projects; private to its owner."""

    __tablename__ = "collections"
    __table_args__ = (Index("collections_owner_idx", "owner_id", "created_at", "id"),)

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Project(IdMixin, CreatedMixin, Base):
    """Products, marketing copy and (through the gallery) generated results. The owner is the
    collection's owner; shared users may read it."""

    __tablename__ = "projects"
    __table_args__ = (
        Index("projects_collection_idx", "collection_id", "created_at", "id"),
        Index("projects_owner_idx", "owner_id", "created_at", "id"),
    )

    collection_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("collections.id"))
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(200))
    marketing_copy: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ShareRole(StrEnum):
    """What a project's share lets its user do (``command_api.catalog.access``)."""

    VIEWER = "viewer"  # reads the project, its products and results
    EDITOR = "editor"  # also adds products and orders jobs in it (charged to the editor)


class ProjectShare(CreatedMixin, Base):
    """Access to a project for another user (the PRD's ``shared_user_list``), as a viewer or
    an editor."""

    __tablename__ = "project_shares"
    __table_args__ = (Index("project_shares_user_idx", "user_id", "project_id"),)

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), default=ShareRole.VIEWER.value)


class InvitationStatus(StrEnum):
    PENDING = "pending"  # open until ``expires_at``
    ACCEPTED = "accepted"
    DECLINED = "declined"
    REVOKED = "revoked"  # by the owner


class ProjectInvitation(IdMixin, CreatedMixin, Base):
    """The owner's offer to share a project with an address (migration 0012): the account that
    holds the address, verified, accepts it (then a ``ProjectShare`` with its role exists) or
    declines it. Made for any address, known or not, so that sharing reveals no account."""

    __tablename__ = "project_invitations"
    __table_args__ = (
        # one open invitation per project and address (inviting again renews it)
        Index(
            "project_invitations_open_key",
            "project_id",
            "email",
            unique=True,
            postgresql_where=text("status = 'pending'"),
        ),
        Index(
            "project_invitations_email_idx",
            "email",
            "created_at",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("project_invitations_sender_idx", "invited_by", "created_at"),
    )

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"))
    email: Mapped[str] = mapped_column(String(320))  # normalised as ``users.email``
    role: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=InvitationStatus.PENDING.value)
    invited_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    responded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    accepted_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))


class StoredImage:
    """Columns of a row whose image is in the object storage, with what its check found."""

    storage_key: Mapped[str] = mapped_column(String(300), unique=True)
    media_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)


class Product(IdMixin, CreatedMixin, StoredImage, Base):
    """One garment image of a project: a category and the side it shows."""

    __tablename__ = "products"
    __table_args__ = (Index("products_project_idx", "project_id", "created_at", "id"),)

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"))
    category: Mapped[str] = mapped_column(String(16))
    side: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(200))


class Asset(IdMixin, CreatedMixin, StoredImage, Base):
    """A user's own input image for jobs: a person photo (``model``) or a ``background``."""

    __tablename__ = "assets"
    __table_args__ = (Index("assets_owner_idx", "owner_id", "created_at", "id"),)

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(200))
