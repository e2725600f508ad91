"""POST/GET /projects, GET/PATCH /projects/{id}, POST/DELETE /projects/{id}/shares."""

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
    problems,
)
from command_api.deps import CurrentUser, SessionDep, SignerDep
from command_api.pagination import Cursor, Limit, Page
from command_api.projects import service
from command_api.projects.schemas import ProjectIn, ProjectOut, ProjectPatch, ShareIn

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


@router.post(
    "/{project_id}/shares",
    status_code=201,
    summary="Share a project with a user, by email, as viewer or editor (owner only; 200 when "
    "already shared: the share takes the role given)",
    responses={
        200: {
            "description": "already shared with that user; its role is now the one given",
            "model": ProjectOut,
        },
        **problems(READ_ONLY, NOT_FOUND, INVALID, TOO_LARGE),
    },
)
def share_project(
    project_id: uuid.UUID,
    body: ShareIn,
    response: Response,
    user: CurrentUser,
    session: SessionDep,
    sign: SignerDep,
) -> ProjectOut:
    project, created = service.share(session, user.id, project_id, str(body.email), body.role)
    if not created:
        response.status_code = 200
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
