"""POST /collections, GET /collections, PATCH and DELETE /collections/{id}."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from command_api.catalog.responses import CURSOR, INVALID, NOT_FOUND, TOO_LARGE, problems
from command_api.collections import service
from command_api.collections.schemas import CollectionIn, CollectionOut, CollectionPatch
from command_api.deps import CurrentUser, SessionDep, SettingsDep
from command_api.pagination import Cursor, Limit, Page

router = APIRouter(prefix="/collections", tags=["collections"])


@router.post("", status_code=201, summary="Create a collection", responses=problems(INVALID, TOO_LARGE))
def create_collection(body: CollectionIn, user: CurrentUser, session: SessionDep) -> CollectionOut:
    return CollectionOut.model_validate(service.create(session, user.id, body))


@router.get("", summary="The caller's collections, newest first", responses=problems(CURSOR, INVALID))
def list_collections(
    user: CurrentUser, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[CollectionOut]:
    items, next_cursor = service.list_owned(session, user.id, limit, cursor)
    return Page[CollectionOut](
        items=[CollectionOut.model_validate(c) for c in items], next_cursor=next_cursor
    )


@router.patch(
    "/{collection_id}",
    summary="Rename a collection or change its description (owner only)",
    responses=problems(NOT_FOUND, INVALID, TOO_LARGE),
)
def update_collection(
    collection_id: uuid.UUID, body: CollectionPatch, user: CurrentUser, session: SessionDep
) -> CollectionOut:
    return CollectionOut.model_validate(service.update(session, user.id, collection_id, body))


@router.delete(
    "/{collection_id}",
    status_code=204,
    summary="Delete a collection with every project in it (owner only; jobs keep their outputs)",
    responses=problems(NOT_FOUND, INVALID),
)
def delete_collection(
    collection_id: uuid.UUID, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Response:
    service.delete_owned(session, settings, user.id, collection_id)
    return Response(status_code=204)
