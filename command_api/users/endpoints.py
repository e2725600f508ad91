"""/users/me: read, update and (soft) delete the caller's account; its password, email and
sign-in sessions."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Body, Response, status

from command_api.auth import verification
from command_api.auth.schemas import EmailChangeIn, PasswordChangeIn, problem_responses
from command_api.deps import (
    CurrentSignIn,
    CurrentUser,
    MailerDep,
    MailLimitsDep,
    PasswordGuardDep,
    ServicesDep,
    SessionDep,
    SignedInUser,
)
from command_api.pagination import Cursor, Limit, Page
from command_api.users import service
from command_api.users.schemas import AccountDeletionIn, SessionOut, UserOut, UserPatch

router = APIRouter(prefix="/users", tags=["users"])

_UNAUTHORIZED = problem_responses({401: "unauthorized"})


@router.get("/me", summary="The caller's account", responses=_UNAUTHORIZED)
def get_me(user: CurrentUser, session: SessionDep) -> UserOut:
    return service.user_out(session, user)


@router.patch(
    "/me",
    summary="Change the caller's name or language",
    responses=problem_responses(
        {401: "unauthorized", 422: "validation_error (e.g. a language not in ko, en, ja, zh)"}
    ),
)
def patch_me(body: UserPatch, user: CurrentUser, session: SessionDep) -> UserOut:
    return service.user_out(session, service.update_profile(session, user, body))


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete the caller's account (soft: data kept, every session ended, no more logins)",
    description='An account with a password sends it: `{"password": ...}`. An account without '
    "one (made by a Google or Kakao sign-in) signs in with its provider again and deletes within "
    "`VTO_REAUTHENTICATION_MAX_AGE_S` (5 minutes), with that sign-in's access token and no body.",
    responses=problem_responses(
        {
            401: "unauthorized",
            403: "reauthentication_required (no password given, or no fresh provider sign-in) or "
            "wrong_password",
            409: "password_not_set: a password was sent for an account that has none",
            422: "validation_error",
            429: "too_many_login_attempts: too many failed password checks of this account",
        }
    ),
)
def delete_me(
    user: SignedInUser,
    sign_in: CurrentSignIn,
    session: SessionDep,
    services: ServicesDep,
    guard: PasswordGuardDep,
    body: Annotated[AccountDeletionIn | None, Body()] = None,
) -> Response:
    password = body.password if body is not None else None
    max_age = services.settings.reauthentication_max_age_s
    service.delete_account(session, guard, user, sign_in, password, max_age)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/me/sessions",
    summary="The caller's live sign-in sessions, newest first",
    responses=problem_responses({400: "invalid_cursor", 401: "unauthorized", 422: "validation_error"}),
)
def list_sessions(
    user: SignedInUser, sign_in: CurrentSignIn, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[SessionOut]:
    items, next_cursor = service.session_page(session, user, sign_in, limit, cursor)
    return Page[SessionOut](items=items, next_cursor=next_cursor)


@router.delete(
    "/me/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End one of the caller's sessions: its refresh token and access tokens stop at once",
    responses=problem_responses(
        {401: "unauthorized", 404: "session_not_found (also another user's)", 422: "validation_error"}
    ),
)
def end_session(session_id: uuid.UUID, user: SignedInUser, session: SessionDep) -> Response:
    service.end_session(session, user, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change the password; every other session ends",
    description="Every other sign-in is revoked at once. The caller's access token stops too; "
    "its refresh token (the same sign-in) gives the next pair. Reset links sent before stop working.",
    responses=problem_responses(
        {
            401: "unauthorized",
            403: "wrong_password: current_password is not correct",
            429: "too_many_login_attempts: too many failed password checks of this account",
            409: "password_not_set: a Google/Kakao account sets one with /auth/password/forgot",
            422: "validation_error",
        }
    ),
)
def change_password(
    body: PasswordChangeIn,
    user: SignedInUser,
    sign_in: CurrentSignIn,
    session: SessionDep,
    guard: PasswordGuardDep,
) -> Response:
    verification.change_password(session, guard, user, body.current_password, body.new_password, sign_in)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/me/email",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,
    summary="Change the email: a link goes to the new address, the change applies when it is followed",
    description="Follow the link with POST /auth/verify-email, signed in. Until then the old address stays.",
    responses=problem_responses(
        {
            401: "unauthorized",
            403: "wrong_password",
            429: "too_many_login_attempts: too many failed password checks of this account",
            409: "email_taken, email_unchanged or password_not_set",
            422: "validation_error",
        }
    ),
)
def change_email(
    body: EmailChangeIn,
    user: SignedInUser,
    session: SessionDep,
    guard: PasswordGuardDep,
    limits: MailLimitsDep,
    mailer: MailerDep,
    background: BackgroundTasks,
) -> Response:
    mail = verification.email_change_mail(session, limits, guard, user, body.email, body.password)
    if mail is not None:
        background.add_task(mailer.deliver, mail)
    return Response(status_code=status.HTTP_202_ACCEPTED)
