"""Projects and their sharing. Owners change a project and its shares, editors add to it,
every shared user reads it (see catalog.access). Never commits."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.orm import Session

from command_api.catalog.access import owned_collection, owned_project, readable_project
from command_api.catalog.errors import CannotShareWithOwner, ShareNotFound, UserNotFound
from command_api.catalog.media import UrlSigner
from command_api.catalog.models import Collection, Project, ProjectShare, ShareRole
from command_api.pagination import keyset_page
from command_api.problems import NotFound
from command_api.products import service as products
from command_api.products.schemas import ProductOut
from command_api.projects import repository
from command_api.projects.schemas import ProjectIn, ProjectOut, ProjectPatch, ShareOut
from command_api.users.repository import live_user_by_email


def create(session: Session, owner_id: uuid.UUID, body: ProjectIn) -> Project:
    owned_collection(session, owner_id, body.collection_id)
    project = Project(
        collection_id=body.collection_id,
        owner_id=owner_id,
        name=body.name,
        marketing_copy=body.marketing_copy,
    )
    session.add(project)
    session.flush()
    return project


def update(session: Session, user_id: uuid.UUID, project_id: uuid.UUID, body: ProjectPatch) -> Project:
    project = owned_project(session, user_id, project_id)
    for field in body.model_fields_set:
        setattr(project, field, getattr(body, field))
    session.flush()
    return project


def _shared_with(user_id: uuid.UUID):  # type: ignore[no-untyped-def]
    return exists().where(ProjectShare.project_id == Project.id, ProjectShare.user_id == user_id)


def list_visible(
    session: Session, user_id: uuid.UUID, collection_id: uuid.UUID | None, limit: int, cursor: str | None
) -> tuple[list[Project], str | None]:
    """Projects the caller owns or that are shared with them, newest first; within one
    collection when given (404 when the caller owns it not and sees nothing in it)."""
    query = select(Project).where(or_(Project.owner_id == user_id, _shared_with(user_id)))
    if collection_id is not None:
        collection = session.get(Collection, collection_id)
        visible_inside = select(exists().where(Project.collection_id == collection_id, _shared_with(user_id)))
        if collection is None or (collection.owner_id != user_id and not session.scalar(visible_inside)):
            raise NotFound("collection")
        query = query.where(Project.collection_id == collection_id)
    return keyset_page(session, query, Project, limit, cursor, descending=True)


def share(
    session: Session,
    user_id: uuid.UUID,
    project_id: uuid.UUID,
    email: str,
    role: ShareRole = ShareRole.VIEWER,
) -> tuple[Project, bool]:
    """Shares the project (owner only) with the live user of ``email`` as ``role``; returns
    (project, newly shared). Sharing again sets the role given (the same role: no change)."""
    project = owned_project(session, user_id, project_id)
    target = live_user_by_email(session, email)
    if target is None:
        raise UserNotFound()
    if target.id == project.owner_id:
        raise CannotShareWithOwner()
    return project, repository.add_share(session, project_id, target.id, role.value)


def unshare(session: Session, user_id: uuid.UUID, project_id: uuid.UUID, target_id: uuid.UUID) -> None:
    """The owner removes anyone's share; a shared user may remove their own (leave), and gets
    403 for anyone else's."""
    if target_id == user_id:
        readable_project(session, user_id, project_id)
    else:
        owned_project(session, user_id, project_id)
    removed = session.execute(
        delete(ProjectShare)
        .where(ProjectShare.project_id == project_id, ProjectShare.user_id == target_id)
        .returning(ProjectShare.user_id)
    ).first()
    if removed is None:
        raise ShareNotFound()


def render(session: Session, sign: UrlSigner, projects: list[Project]) -> list[ProjectOut]:
    """Project bodies, with a few batched queries for the whole list."""
    ids = [p.id for p in projects]
    stats = repository.stats(session, ids)
    shares = repository.shares(session, ids)
    product_rows = products.of_projects(session, ids)
    return [
        ProjectOut(
            id=p.id,
            collection_id=p.collection_id,
            owner_id=p.owner_id,
            name=p.name,
            marketing_copy=p.marketing_copy,
            shared_user_ids=[share_user for share_user, _ in shares[p.id]],
            shares=[ShareOut(user_id=share_user, role=ShareRole(role)) for share_user, role in shares[p.id]],
            image_count=stats[p.id][0],
            video_count=stats[p.id][1],
            products=[ProductOut.of(product, sign) for product in product_rows[p.id]],
            created_at=p.created_at,
            updated_at=p.updated_at,
        )
        for p in projects
    ]
