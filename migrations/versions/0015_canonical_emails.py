"""Stored emails in their one canonical form (NFKC, lower-cased, IDNA domain in Unicode), as
the API now compares them everywhere (``command_api/users/emails.py``).

Revision ID: 0015_canonical_emails
Revises: 0014_storage_erasure
Create Date: 2026-12-06
"""

from __future__ import annotations

import logging
import unicodedata

import sqlalchemy as sa
from alembic import op
from email_validator import EmailNotValidError, validate_email

revision = "0015_canonical_emails"
down_revision = "0014_storage_erasure"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def _canonical(value: str) -> str:
    """The form of ``command_api.users.emails.canonical_email`` when this revision was written
    (a migration keeps the rule it was written with)."""
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).strip().lower())
    local, at, _ = text.rpartition("@")
    if not at:
        return text
    try:
        domain = validate_email(text, check_deliverability=False).domain
    except EmailNotValidError:
        return text
    return f"{local}@{domain.lower()}"


def upgrade() -> None:
    conn = op.get_bind()
    users = conn.execute(
        sa.text("SELECT id, email, deleted_at IS NULL AS live FROM users ORDER BY created_at, id")
    ).all()
    # Live accounts keep one account per canonical address: the oldest account whose address
    # is already canonical, else the oldest one, gets it; a younger look-alike keeps its
    # address as it is (logged: the operator decides; it can no longer sign in by password,
    # since every lookup now uses the canonical form).
    taken = {row.email for row in users if row.live and _canonical(row.email) == row.email}
    for row in users:
        canonical = _canonical(row.email)
        if canonical == row.email:
            continue
        if row.live:
            if canonical in taken:
                log.warning("user %s keeps the email %r: a live account has %r", row.id, row.email, canonical)
                continue
            taken.add(canonical)
        conn.execute(
            sa.text("UPDATE users SET email = :email WHERE id = :id"), {"email": canonical, "id": row.id}
        )
    for table, where in (("mail_tokens", "used_at IS NULL"), ("oauth_identities", "email IS NOT NULL")):
        rows = conn.execute(sa.text(f"SELECT id, email FROM {table} WHERE {where}")).all()
        for row in rows:
            if _canonical(row.email) != row.email:
                conn.execute(
                    sa.text(f"UPDATE {table} SET email = :email WHERE id = :id"),
                    {"email": _canonical(row.email), "id": row.id},
                )
    # Invitations waiting for an answer (0013): matched on the canonical address now; one open
    # invitation per project and address, so a look-alike of an open one keeps its spelling.
    rows = conn.execute(sa.text("SELECT id, email FROM project_invitations WHERE status = 'pending'")).all()
    for row in rows:
        if _canonical(row.email) != row.email:
            conn.execute(
                sa.text(
                    "UPDATE project_invitations i SET email = :email WHERE i.id = :id AND NOT EXISTS "
                    "(SELECT 1 FROM project_invitations o WHERE o.project_id = i.project_id "
                    "AND o.email = :email AND o.status = 'pending')"
                ),
                {"email": _canonical(row.email), "id": row.id},
            )


def downgrade() -> None:
    """Nothing to undo: the canonical form is a valid stored email for the earlier code."""
