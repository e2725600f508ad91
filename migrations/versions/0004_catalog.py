"""The catalog: collections, projects, project shares, products, assets.

Revision ID: 0004_catalog
Revises: 0003_users
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_catalog"
down_revision = "0003_users"
branch_labels = None
depends_on = None


def _stamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    ]


def _image_columns(table: str) -> list[sa.Column | sa.CheckConstraint]:
    return [
        sa.Column("name", sa.String(200)),
        sa.Column("storage_key", sa.String(300), nullable=False, unique=True),
        sa.Column("media_type", sa.String(32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "media_type IN ('image/png', 'image/jpeg', 'image/webp')", name=f"{table}_media_type"
        ),
        sa.CheckConstraint("width > 0 AND height > 0 AND size_bytes > 0", name=f"{table}_dimensions"),
    ]


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("owner_id", sa.Uuid(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text()),
        *_stamps(),
    )
    # The owner's list, newest first (keyset pagination on (created_at, id)).
    op.create_index("collections_owner_idx", "collections", ["owner_id", "created_at", "id"])

    op.create_table(
        "projects",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("collection_id", sa.Uuid(), sa.ForeignKey("collections.id"), nullable=False),
        sa.Column("owner_id", sa.Uuid(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("marketing_copy", sa.Text()),
        *_stamps(),
    )
    op.create_index("projects_collection_idx", "projects", ["collection_id", "created_at", "id"])
    op.create_index("projects_owner_idx", "projects", ["owner_id", "created_at", "id"])

    op.create_table(
        "project_shares",
        sa.Column("project_id", sa.Uuid(), sa.ForeignKey("projects.id"), primary_key=True),
        sa.Column("user_id", sa.Uuid(), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("project_shares_user_idx", "project_shares", ["user_id", "project_id"])

    op.create_table(
        "products",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("project_id", sa.Uuid(), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        *_image_columns("products"),
        sa.CheckConstraint("category IN ('top', 'bottom', 'dress', 'outer')", name="products_category"),
        sa.CheckConstraint("side IN ('front', 'back')", name="products_side"),
    )
    op.create_index("products_project_idx", "products", ["project_id", "created_at", "id"])

    op.create_table(
        "assets",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("owner_id", sa.Uuid(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        *_image_columns("assets"),
        sa.CheckConstraint("type IN ('model', 'background')", name="assets_type"),
    )
    op.create_index("assets_owner_idx", "assets", ["owner_id", "created_at", "id"])


def downgrade() -> None:
    for table in ("assets", "products", "project_shares", "projects", "collections"):
        op.drop_table(table)
