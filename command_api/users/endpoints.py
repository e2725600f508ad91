"""/users/me: read, update and (soft) delete the caller's account."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from command_api.auth.schemas import problem_responses
from command_api.deps import CurrentUser, ServicesDep, SessionDep
from command_api.users import service
from command_api.users.schemas import UserOut, UserPatch

router = APIRouter(prefix="/users", tags=["users"])

_UNAUTHORIZED = problem_responses({401: "unauthorized"})


@router.get("/me", summary="The caller's account", responses=_UNAUTHORIZED)
def get_me(user: CurrentUser, services: ServicesDep) -> UserOut:
    return service.user_out(services, user)


@router.patch(
    "/me",
    summary="Change the caller's name or language",
    responses=problem_responses(
        {401: "unauthorized", 422: "validation_error (e.g. a language not in ko, en, ja, zh)"}
    ),
)
def patch_me(body: UserPatch, user: CurrentUser, session: SessionDep, services: ServicesDep) -> UserOut:
    return service.user_out(services, service.update_profile(session, user, body))


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete the caller's account (soft: data kept, every token revoked, no more logins)",
    responses=_UNAUTHORIZED,
)
def delete_me(user: CurrentUser, session: SessionDep) -> Response:
    service.soft_delete(session, user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
