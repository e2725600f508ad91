"""Queries of project shares (live shared users with their roles; adding a share) and the
``project_stats`` read model that project bodies are assembled from (maintained by the
``jobs`` projection; ``project_id`` is text there)."""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, Text, column, select, table, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from command_api.catalog.models import ProjectShare
from command_api.users.models import User

project_stats = table(
    "project_stats",
    column("project_id", Text),
    column("image_count", BigInteger),
    column("video_count", BigInteger),
)


def stats(session: Session, project_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[int, int]]:
    """(image_count, video_count) per project; (0, 0) for projects with no results yet."""
    found = dict.fromkeys(project_ids, (0, 0))
    if not project_ids:
        return found
    by_text = {str(pid): pid for pid in project_ids}
    query = select(
        project_stats.c.project_id, project_stats.c.image_count, project_stats.c.video_count
    ).where(project_stats.c.project_id.in_(list(by_text)))
    for project_id, images, videos in session.execute(query):
        found[by_text[project_id]] = (int(images), int(videos))
    return found


def shares(session: Session, project_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[tuple[uuid.UUID, str]]]:
    """The live users each project is shared with and their roles, in the order they were
    added."""
    found: dict[uuid.UUID, list[tuple[uuid.UUID, str]]] = {pid: [] for pid in project_ids}
    if not project_ids:
        return found
    query = (
        select(ProjectShare.project_id, ProjectShare.user_id, ProjectShare.role)
        .join(User, User.id == ProjectShare.user_id)
        .where(ProjectShare.project_id.in_(project_ids), User.deleted_at.is_(None))
        .order_by(ProjectShare.created_at, ProjectShare.user_id)
    )
    for project_id, user_id, role in session.execute(query):
        found[project_id].append((user_id, role))
    return found


def add_share(session: Session, project_id: uuid.UUID, user_id: uuid.UUID, role: str) -> bool:
    """Share the project with the user as ``role``: True when newly shared; otherwise the
    existing share takes ``role`` (False)."""
    inserted = session.execute(
        insert(ProjectShare)
        .values(project_id=project_id, user_id=user_id, role=role)
        .on_conflict_do_nothing()
        .returning(ProjectShare.user_id)
    ).first()
    if inserted is not None:
        return True
    session.execute(
        update(ProjectShare)
        .where(ProjectShare.project_id == project_id, ProjectShare.user_id == user_id)
        .values(role=role)
    )
    return False
