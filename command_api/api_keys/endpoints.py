"""/api-keys: a signed-in person makes, lists and revokes the account's API keys (a key
itself may not: 403 ``api_key_not_allowed``)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from command_api.api_keys import service
from command_api.api_keys.schemas import ApiKeyCreated, ApiKeyIn, ApiKeyOut
from command_api.deps import ServicesDep, SessionDep, SignedInUser

router = APIRouter(prefix="/api-keys", tags=["api-keys"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Make an API key for a server; the key is in this answer only",
    responses={409: {"description": "too_many_api_keys: the account holds the most live keys it may"}},
)
def create_key(
    body: ApiKeyIn, user: SignedInUser, session: SessionDep, services: ServicesDep, response: Response
) -> ApiKeyCreated:
    response.headers["Cache-Control"] = "no-store"  # a secret: never kept by a cache
    return service.create(session, user.id, body.name, services.settings, services.clock)


@router.get("", summary="The account's live API keys, newest first (never the keys themselves)")
def list_keys(user: SignedInUser, session: SessionDep) -> list[ApiKeyOut]:
    return service.list_keys(session, user.id)


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key: every replica refuses it from the next request on",
    responses={404: {"description": "no such live key of the caller's"}},
)
def revoke_key(key_id: uuid.UUID, user: SignedInUser, session: SessionDep) -> Response:
    service.revoke(session, user.id, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
