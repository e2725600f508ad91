"""Queries of project shares (live shared users with their roles; adding a share), of share
invitations (rate limit, upsert, the open ones of a project or an address), and of the
``project_stats`` read model that project bodies are assembled from (maintained by the
``jobs`` projection; ``project_id`` is text there)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import BigInteger, Select, Text, column, func, select, table, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from command_api.catalog.models import InvitationStatus, Project, ProjectInvitation, ProjectShare
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


def set_share_role(session: Session, project_id: uuid.UUID, user_id: uuid.UUID, role: str) -> bool:
    """The existing share takes ``role``; False when there is none."""
    changed = session.execute(
        update(ProjectShare)
        .where(ProjectShare.project_id == project_id, ProjectShare.user_id == user_id)
        .values(role=role)
        .returning(ProjectShare.user_id)
    ).first()
    return changed is not None


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
    set_share_role(session, project_id, user_id, role)
    return False


# --- invitations ---------------------------------------------------------------------------
PENDING = InvitationStatus.PENDING.value


def lock_sender(session: Session, sender_id: uuid.UUID) -> None:
    """Serialises one account's invitations (in every API process) until the transaction
    ends, so that its rate limit is counted exactly."""
    key = func.hashtextextended(f"project_invitations:{sender_id}", 0)
    session.execute(select(func.pg_advisory_xact_lock(key)))


def sent_since(session: Session, sender_id: uuid.UUID, window_s: int) -> tuple[int, float]:
    """How many invitations the account sent in the last ``window_s`` seconds (database clock),
    and in how many seconds the oldest of them leaves the window."""
    window = timedelta(seconds=window_s)
    count, oldest_left = session.execute(
        select(
            func.count(),
            func.extract("epoch", func.min(ProjectInvitation.created_at) + window - func.now()),
        ).where(ProjectInvitation.invited_by == sender_id, ProjectInvitation.created_at > func.now() - window)
    ).one()
    return int(count), float(oldest_left or 0)


def open_invitations(session: Session, project_id: uuid.UUID, other_than: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(ProjectInvitation)
            .where(
                ProjectInvitation.project_id == project_id,
                ProjectInvitation.status == PENDING,
                ProjectInvitation.email != other_than,
            )
        )
        or 0
    )


def upsert_invitation(
    session: Session, project_id: uuid.UUID, email: str, role: str, sender_id: uuid.UUID, ttl_s: int
) -> ProjectInvitation:
    """The open invitation of the project to ``email`` with ``role``, valid ``ttl_s`` from now
    (database clock): a new one, or the one already open, renewed."""
    values = {
        "project_id": project_id,
        "email": email,
        "role": role,
        "status": PENDING,
        "invited_by": sender_id,
        "created_at": func.now(),
        "expires_at": func.now() + timedelta(seconds=ttl_s),
    }
    upsert = (
        insert(ProjectInvitation)
        .values(id=uuid.uuid4(), **values)
        .on_conflict_do_update(
            index_elements=[ProjectInvitation.project_id, ProjectInvitation.email],
            # a literal, as the partial index has it: a bound parameter is not matched to the
            # index's predicate once the statement is prepared (a generic plan)
            index_where=text(f"status = '{PENDING}'"),
            set_={k: v for k, v in values.items() if k not in ("project_id", "email", "status")},
        )
        .returning(ProjectInvitation)
    )
    return session.scalars(upsert, execution_options={"populate_existing": True}).one()


def open_invitation_to(
    session: Session, invitation_id: uuid.UUID, email: str, *, lock: bool = False
) -> ProjectInvitation | None:
    """The invitation if it is open (pending, not expired) and addressed to ``email``."""
    query = select(ProjectInvitation).where(
        ProjectInvitation.id == invitation_id,
        ProjectInvitation.status == PENDING,
        ProjectInvitation.email == email,
        ProjectInvitation.expires_at > func.now(),
    )
    return session.scalar(query.with_for_update() if lock else query)


def respond(
    session: Session,
    invitation: ProjectInvitation,
    status: InvitationStatus,
    user_id: uuid.UUID | None = None,
) -> None:
    session.execute(
        update(ProjectInvitation)
        .where(ProjectInvitation.id == invitation.id)
        .values(status=status.value, responded_at=func.now(), accepted_by=user_id)
    )


def invitations_query(**where: Any) -> Select[ProjectInvitation]:
    """Open invitations (pending) matching ``where`` (column = value)."""
    conditions = [getattr(ProjectInvitation, column) == value for column, value in where.items()]
    return select(ProjectInvitation).where(ProjectInvitation.status == PENDING, *conditions)


def projects_and_senders(
    session: Session, invitations: list[ProjectInvitation]
) -> tuple[dict[uuid.UUID, Project], dict[uuid.UUID, User]]:
    """The projects and the senders of these invitations (two queries)."""
    project_ids = {i.project_id for i in invitations}
    sender_ids = {i.invited_by for i in invitations}
    projects = {p.id: p for p in session.scalars(select(Project).where(Project.id.in_(project_ids)))}
    senders = {u.id: u for u in session.scalars(select(User).where(User.id.in_(sender_ids)))}
    return projects, senders
