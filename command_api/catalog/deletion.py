"""Deleting catalog rows: the rows go at once, in the request's transaction; their stored
objects are scheduled for erasure in the same transaction (``infra.erasure``), after every job
ordered before the deletion has ended. Such a job reads its inputs from the storage, not from
these rows: it still generates (or, failing, is refunded), and its outputs, stored under its
own keys, stay."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from command_api.catalog.models import Product, Project, ProjectInvitation, ProjectShare
from infra.erasure import erasure_delay, schedule
from infra.settings import Settings


def erase_later(session: Session, settings: Settings, keys: Iterable[str], reason: str) -> None:
    schedule(session, keys, reason, erasure_delay(settings))


def delete_projects(session: Session, settings: Settings, project_ids: list[uuid.UUID], reason: str) -> None:
    """Deletes the projects (locked by the caller) with their products, shares and
    invitations."""
    if not project_ids:
        return
    keys = session.scalars(select(Product.storage_key).where(Product.project_id.in_(project_ids))).all()
    erase_later(session, settings, keys, reason)
    for table in (ProjectInvitation, ProjectShare, Product):
        session.execute(delete(table).where(table.project_id.in_(project_ids)))
    session.execute(delete(Project).where(Project.id.in_(project_ids)))
