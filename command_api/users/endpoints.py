"""/users/me: read, update and (soft) delete the caller's account."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Response, status

from command_api.auth import verification
from command_api.auth.schemas import EmailChangeIn, PasswordChangeIn, problem_responses
from command_api.deps import CurrentSignIn, CurrentUser, MailerDep, ServicesDep, SessionDep
from command_api.users import service
from command_api.users.schemas import UserOut, UserPatch

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
    summary="Delete the caller's account (soft: data kept, every token revoked, no more logins)",
    responses=_UNAUTHORIZED,
)
def delete_me(user: CurrentUser, session: SessionDep) -> Response:
    service.soft_delete(session, user)
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
            409: "password_not_set: a Google/Kakao account sets one with /auth/password/forgot",
            422: "validation_error",
        }
    ),
)
def change_password(
    body: PasswordChangeIn, user: CurrentUser, sign_in: CurrentSignIn, session: SessionDep
) -> Response:
    verification.change_password(session, user, body.current_password, body.new_password, sign_in)
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
            409: "email_taken, email_unchanged or password_not_set",
            422: "validation_error",
        }
    ),
)
def change_email(
    body: EmailChangeIn,
    user: CurrentUser,
    session: SessionDep,
    services: ServicesDep,
    mailer: MailerDep,
    background: BackgroundTasks,
) -> Response:
    mail = verification.email_change_mail(session, services.settings, user, body.email, body.password)
    if mail is not None:
        background.add_task(mailer.deliver, mail)
    return Response(status_code=status.HTTP_202_ACCEPTED)
