"""POST/GET /projects, GET/PATCH/DELETE /projects/{id}, POST /projects/{id}/shares (an invitation),
PATCH/DELETE /projects/{id}/shares/{user_id}, GET /projects/{id}/invitations, DELETE
/projects/{id}/invitations/{id}; the invitee's GET /invitations and POST
/invitations/{id}/accept|decline."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from command_api.catalog.access import readable_project
from command_api.catalog.responses import (
    CURSOR,
    INVALID,
    NOT_FOUND,
    READ_ONLY,
    TOO_LARGE,
    Responses,
    problem_response,
    problems,
)
from command_api.deps import CurrentUser, SessionDep, SettingsDep, SignerDep
from command_api.pagination import Cursor, Limit, Page
from command_api.projects import service
from command_api.projects.schemas import (
    InvitationOut,
    ProjectIn,
    ProjectOut,
    ProjectPatch,
    ReceivedInvitationOut,
    ShareIn,
    ShareRoleIn,
)

router = APIRouter(prefix="/projects", tags=["projects"])


@router.post(
    "",
    status_code=201,
    summary="Create a project in one of the caller's collections",
    responses=problems(NOT_FOUND, INVALID, TOO_LARGE),
)
def create_project(body: ProjectIn, user: CurrentUser, session: SessionDep, sign: SignerDep) -> ProjectOut:
    project = service.create(session, user.id, body)
    return service.render(session, sign, [project])[0]


@router.get(
    "",
    summary="Projects the caller owns or that are shared with them, newest first",
    responses=problems(NOT_FOUND, CURSOR, INVALID),
)
def list_projects(
    user: CurrentUser,
    session: SessionDep,
    sign: SignerDep,
    collection_id: Annotated[uuid.UUID | None, Query(description="Only this collection's")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ProjectOut]:
    items, next_cursor = service.list_visible(session, user.id, collection_id, limit, cursor)
    return Page[ProjectOut](items=service.render(session, sign, items), next_cursor=next_cursor)


@router.get(
    "/{project_id}", summary="A project (owner or shared reader)", responses=problems(NOT_FOUND, INVALID)
)
def get_project(project_id: uuid.UUID, user: CurrentUser, session: SessionDep, sign: SignerDep) -> ProjectOut:
    project = readable_project(session, user.id, project_id)
    return service.render(session, sign, [project])[0]


@router.patch(
    "/{project_id}",
    summary="Rename a project or change its marketing copy (owner only)",
    responses=problems(READ_ONLY, NOT_FOUND, INVALID, TOO_LARGE),
)
def update_project(
    project_id: uuid.UUID,
    body: ProjectPatch,
    user: CurrentUser,
    session: SessionDep,
    sign: SignerDep,
) -> ProjectOut:
    project = service.update(session, user.id, project_id, body)
    return service.render(session, sign, [project])[0]


@router.delete(
    "/{project_id}",
    status_code=204,
    summary="Delete a project with its products, shares and invitations (owner only; jobs keep their "
    "outputs)",
    responses=problems(READ_ONLY, NOT_FOUND, INVALID),
)
def delete_project(
    project_id: uuid.UUID, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Response:
    service.delete_owned(session, settings, user.id, project_id)
    return Response(status_code=204)


@router.post(
    "/{project_id}/shares",
    status_code=202,
    summary="Invite an address to the project as viewer or editor (owner only); the account holding "
    "it accepts on POST /invitations/{id}/accept. The same answer for every address",
    responses=problems(
        READ_ONLY,
        NOT_FOUND,
        INVALID,
        TOO_LARGE,
        {
            409: problem_response(
                409, "too_many_open_invitations", "the project has too many open invitations"
            ),
            429: {
                **problem_response(429, "too_many_invitations", "the account sent too many invitations"),
                "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
            },
        },
    ),
)
def share_project(
    project_id: uuid.UUID, body: ShareIn, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> InvitationOut:
    return InvitationOut.of(
        service.invite(session, settings, user.id, project_id, str(body.email), body.role)
    )


@router.get(
    "/{project_id}/invitations",
    summary="The project's open invitations, newest first (owner only)",
    responses=problems(READ_ONLY, NOT_FOUND, CURSOR, INVALID),
)
def list_invitations(
    project_id: uuid.UUID, user: CurrentUser, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[InvitationOut]:
    items, next_cursor = service.project_invitations(session, user.id, project_id, limit, cursor)
    return Page[InvitationOut](items=[InvitationOut.of(i) for i in items], next_cursor=next_cursor)


@router.delete(
    "/{project_id}/invitations/{invitation_id}",
    status_code=204,
    summary="Revoke an open invitation (owner only)",
    responses=problems(READ_ONLY, NOT_FOUND, INVALID),
)
def revoke_invitation(
    project_id: uuid.UUID, invitation_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> Response:
    service.revoke(session, user.id, project_id, invitation_id)
    return Response(status_code=204)


@router.patch(
    "/{project_id}/shares/{user_id}",
    summary="Change a member's role (owner only)",
    responses=problems(READ_ONLY, NOT_FOUND, INVALID, TOO_LARGE),
)
def change_share_role(
    project_id: uuid.UUID,
    user_id: uuid.UUID,
    body: ShareRoleIn,
    user: CurrentUser,
    session: SessionDep,
    sign: SignerDep,
) -> ProjectOut:
    project = service.set_role(session, user.id, project_id, user_id, body.role)
    return service.render(session, sign, [project])[0]


@router.delete(
    "/{project_id}/shares/{user_id}",
    status_code=204,
    summary="Stop sharing a project with a user (owner only; or a shared user leaving)",
    responses=problems(READ_ONLY, NOT_FOUND, INVALID),
)
def unshare_project(
    project_id: uuid.UUID, user_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> Response:
    service.unshare(session, user.id, project_id, user_id)
    return Response(status_code=204)


invitations_router = APIRouter(prefix="/invitations", tags=["projects"])
UNVERIFIED: Responses = {403: problem_response(403, "email_unverified", "verify your email address first")}
NO_INVITATION: Responses = {
    404: problem_response(404, "invitation_not_found", "no open invitation with that id for you")
}


@invitations_router.get(
    "",
    summary="The open invitations to the caller's address, newest first (the address verified)",
    responses=problems(UNVERIFIED, CURSOR, INVALID),
)
def received_invitations(
    user: CurrentUser, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[ReceivedInvitationOut]:
    items, next_cursor = service.received(session, user, limit, cursor)
    return Page[ReceivedInvitationOut](items=items, next_cursor=next_cursor)


@invitations_router.post(
    "/{invitation_id}/accept",
    summary="Accept an invitation: the project is shared with the caller as its role",
    responses=problems(UNVERIFIED, NO_INVITATION, INVALID),
)
def accept_invitation(
    invitation_id: uuid.UUID, user: CurrentUser, session: SessionDep, sign: SignerDep
) -> ProjectOut:
    project = service.accept(session, user, invitation_id)
    return service.render(session, sign, [project])[0]


@invitations_router.post(
    "/{invitation_id}/decline",
    status_code=204,
    summary="Decline an invitation",
    responses=problems(UNVERIFIED, NO_INVITATION, INVALID),
)
def decline_invitation(invitation_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    service.decline(session, user, invitation_id)
    return Response(status_code=204)
