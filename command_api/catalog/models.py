"""The catalog tables (created by migration 0004_catalog; share roles by 0007): collections,
projects, project shares, products and assets. Image bytes live in the object storage under
``storage_key``."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Text
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
