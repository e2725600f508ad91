"""Projects and their sharing. Owners change a project and its shares, editors add to it,
every shared user reads it (see catalog.access). A project is shared by invitation: the owner
invites an address (the same answer for every address), and the account holding it, once
verified, accepts (the share exists from then on) or declines. Never commits."""

from __future__ import annotations

import math
import uuid

from sqlalchemy import delete, exists, func, or_, select
from sqlalchemy.orm import Session

from command_api.catalog.access import owned_collection, owned_project, readable_project
from command_api.catalog.deletion import delete_projects
from command_api.catalog.errors import (
    CannotShareWithOwner,
    EmailUnverified,
    InvitationNotFound,
    ShareNotFound,
    TooManyInvitations,
    TooManyOpenInvitations,
)
from command_api.catalog.media import UrlSigner
from command_api.catalog.models import (
    Collection,
    InvitationStatus,
    Project,
    ProjectInvitation,
    ProjectShare,
    ShareRole,
)
from command_api.pagination import keyset_page
from command_api.problems import NotFound
from command_api.products import service as products
from command_api.products.schemas import ProductOut
from command_api.projects import repository
from command_api.projects.schemas import (
    InvitedProject,
    Inviter,
    ProjectIn,
    ProjectOut,
    ProjectPatch,
    ReceivedInvitationOut,
    ShareOut,
)
from command_api.users.models import User
from infra.settings import Settings

MAX_OPEN_INVITATIONS = 100  # per project


def create(session: Session, owner_id: uuid.UUID, body: ProjectIn) -> Project:
    owned_collection(session, owner_id, body.collection_id, lock="key_share")
    project = Project(
        collection_id=body.collection_id,
        owner_id=owner_id,
        name=body.name,
        marketing_copy=body.marketing_copy,
    )
    session.add(project)
    session.flush()
    return project


def delete_owned(session: Session, settings: Settings, user_id: uuid.UUID, project_id: uuid.UUID) -> None:
    """The owner deletes the project with its products, shares and invitations (shared users:
    403; anyone else: 404). Jobs ordered in it keep their outputs; its gallery goes with it."""
    owned_project(session, user_id, project_id, lock=True)
    delete_projects(session, settings, [project_id], "project deleted")


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


def invite(
    session: Session,
    settings: Settings,
    user_id: uuid.UUID,
    project_id: uuid.UUID,
    email: str,
    role: ShareRole,
) -> ProjectInvitation:
    """The owner invites ``email`` to the project as ``role``: an open invitation, whatever the
    address (no account is looked up, so the answer and its timing say nothing about one).
    Inviting an address again renews its open invitation. At most
    ``share_invitations_per_window`` per account in the window (``TooManyInvitations``, 429)
    and ``MAX_OPEN_INVITATIONS`` open per project (409)."""
    project = owned_project(session, user_id, project_id)
    owner = session.get(User, project.owner_id)
    if owner is not None and owner.email == email:
        raise CannotShareWithOwner()
    repository.lock_sender(session, user_id)
    sent, oldest_left_s = repository.sent_since(session, user_id, settings.share_invitation_window_s)
    if sent >= settings.share_invitations_per_window:
        retry = max(1, math.ceil(oldest_left_s))
        raise TooManyInvitations(
            settings.share_invitations_per_window, settings.share_invitation_window_s, retry
        )
    if repository.open_invitations(session, project_id, other_than=email) >= MAX_OPEN_INVITATIONS:
        raise TooManyOpenInvitations(f"a project has at most {MAX_OPEN_INVITATIONS} open invitations")
    return repository.upsert_invitation(
        session, project_id, email, role.value, user_id, settings.share_invitation_ttl_s
    )


def project_invitations(
    session: Session, user_id: uuid.UUID, project_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[ProjectInvitation], str | None]:
    """The project's open invitations, newest first (owner only)."""
    owned_project(session, user_id, project_id)
    query = repository.invitations_query(project_id=project_id)
    return keyset_page(session, query, ProjectInvitation, limit, cursor, descending=True)


def revoke(session: Session, user_id: uuid.UUID, project_id: uuid.UUID, invitation_id: uuid.UUID) -> None:
    owned_project(session, user_id, project_id)
    query = repository.invitations_query(id=invitation_id, project_id=project_id).with_for_update()
    invitation = session.scalar(query)
    if invitation is None:
        raise InvitationNotFound()
    repository.respond(session, invitation, InvitationStatus.REVOKED)


def received(
    session: Session, user: User, limit: int, cursor: str | None
) -> tuple[list[ReceivedInvitationOut], str | None]:
    """The open invitations to the caller's address, newest first; ``EmailUnverified`` (403)
    until the caller has proved the address is theirs."""
    _check_verified(user)
    query = repository.invitations_query(email=user.email).where(ProjectInvitation.expires_at > func.now())
    items, next_cursor = keyset_page(session, query, ProjectInvitation, limit, cursor, descending=True)
    projects, senders = repository.projects_and_senders(session, items)
    out = [
        ReceivedInvitationOut(
            id=i.id,
            role=ShareRole(i.role),
            project=InvitedProject(id=i.project_id, name=projects[i.project_id].name),
            invited_by=Inviter(name=senders[i.invited_by].name, email=senders[i.invited_by].email),
            created_at=i.created_at,
            expires_at=i.expires_at,
        )
        for i in items
    ]
    return out, next_cursor


def accept(session: Session, user: User, invitation_id: uuid.UUID) -> Project:
    """The caller accepts an open invitation to their (verified) address: the project is
    shared with them as its role (a member already keeps their share with that role)."""
    _check_verified(user)
    found = repository.open_invitation_to(session, invitation_id, user.email)
    # The project's lock first, then the invitation's, as a deletion of the project takes them.
    project = None if found is None else session.get(Project, found.project_id, with_for_update=True)
    invitation = repository.open_invitation_to(session, invitation_id, user.email, lock=True)
    if project is None or invitation is None:
        raise InvitationNotFound()
    if project.owner_id == user.id:
        raise CannotShareWithOwner()
    repository.add_share(session, project.id, user.id, invitation.role)
    repository.respond(session, invitation, InvitationStatus.ACCEPTED, user.id)
    return project


def decline(session: Session, user: User, invitation_id: uuid.UUID) -> None:
    _check_verified(user)
    invitation = repository.open_invitation_to(session, invitation_id, user.email, lock=True)
    if invitation is None:
        raise InvitationNotFound()
    repository.respond(session, invitation, InvitationStatus.DECLINED)


def _check_verified(user: User) -> None:
    if user.email_verified_at is None:
        raise EmailUnverified()


def set_role(
    session: Session, user_id: uuid.UUID, project_id: uuid.UUID, member_id: uuid.UUID, role: ShareRole
) -> Project:
    """The owner changes a member's role (``ShareNotFound`` when the project is not shared
    with them)."""
    project = owned_project(session, user_id, project_id)
    if not repository.set_share_role(session, project_id, member_id, role.value):
        raise ShareNotFound()
    return project


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
