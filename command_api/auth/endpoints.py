"""/auth: register, login, refresh, social login (Google, Kakao), email verification and
password reset (mail is delivered by a background task, after the request committed)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Query, Request, Response, status

from command_api import problems
from command_api.auth import oauth_states, service, throttle, verification
from command_api.auth.errors import RefreshTokenReused
from command_api.auth.oauth import STATE_MAX_AGE_S
from command_api.auth.schemas import (
    URL_MAX,
    AuthorizeOut,
    ForgotPasswordIn,
    LoginIn,
    MailTokenIn,
    OAuthCodeIn,
    RefreshIn,
    RegisterIn,
    ResetPasswordIn,
    TokenPair,
    problem_responses,
)
from command_api.auth.sessions import SignIn
from command_api.auth.throttle import client_address
from command_api.deps import (
    CurrentClaims,
    LedgerDep,
    MailerDep,
    MailLimitsDep,
    OAuthDep,
    PasswordGuardDep,
    ServicesDep,
    SessionDep,
    SignedInUser,
)
from command_api.inputs import Text
from command_api.points import signup
from command_api.services import Services
from command_api.users.models import User
from command_api.users.schemas import UserOut
from command_api.users.service import user_out
from ledger.application import LedgerApplication

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    summary="Create an account with email and password",
    responses=problem_responses(
        {
            409: "email_taken: a live account has this email",
            422: "validation_error",
            429: "too_many_registrations: too many from this client address; Retry-After says when",
        }
    ),
)
def register(
    body: RegisterIn,
    request: Request,
    session: SessionDep,
    ledger: LedgerDep,
    services: ServicesDep,
    limits: MailLimitsDep,
    mailer: MailerDep,
    background: BackgroundTasks,
) -> UserOut:
    throttle.admit_registration(services.engine, services.settings, client_address(request))
    user = service.register(session, ledger, body)
    mail = verification.verification_mail(session, limits, user)
    if mail is not None:
        background.add_task(mailer.deliver, mail)
    return user_out(session, user)


@router.post(
    "/login",
    summary="Exchange email and password for tokens",
    responses=problem_responses(
        {
            401: "invalid_credentials (unknown email, wrong password, deleted account)",
            429: "too_many_login_attempts: too many failed password checks for this email (or "
            "a failure from an address with too many); Retry-After says when to try again",
        }
    ),
)
def login(
    body: LoginIn, request: Request, session: SessionDep, services: ServicesDep, guard: PasswordGuardDep
) -> TokenPair:
    sign_in = _sign_in(request, "password")
    return service.login(session, services.secret, guard, body.email, body.password, sign_in)


def _sign_in(request: Request, method: str) -> SignIn:
    return SignIn(method, request.headers.get("user-agent"), client_address(request))


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End this session: its refresh token and access tokens stop at once (others stay)",
    responses=problem_responses({401: "unauthorized"}),
)
def logout(user: SignedInUser, claims: CurrentClaims, session: SessionDep) -> Response:
    if claims.family is not None:
        service.revoke_family(session, user.id, claims.family)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/refresh",
    summary="Rotate a refresh token: it is used up and the next pair is returned",
    response_model=TokenPair,
    responses=problem_responses(
        {
            401: "invalid_token (expired, tampered, revoked) or refresh_token_reused (the whole "
            "sign-in is revoked)"
        }
    ),
)
def refresh(body: RefreshIn, session: SessionDep, services: ServicesDep) -> Any:
    try:
        return service.refresh(session, services.secret, body.refresh_token)
    except RefreshTokenReused as exc:
        # Answered (not raised) so that the request's transaction commits the revocation of
        # the token family; a raised error would roll it back.
        return problems.problem(exc.status, exc.code, exc.detail)


@router.get(
    "/oauth/{provider}/authorize",
    summary="Start a social login: the provider URL with state and PKCE (S256)",
    responses=problem_responses(
        {404: "unknown_provider", 503: "oauth_not_configured: no client id for this provider"}
    ),
)
def authorize(
    provider: str,
    oauth: OAuthDep,
    redirect_uri: Annotated[Text, Query(min_length=1, max_length=URL_MAX)],
) -> AuthorizeOut:
    started = oauth.authorize(provider, redirect_uri)
    return AuthorizeOut(
        authorization_url=started.url,
        state=started.state,
        code_verifier=started.code_verifier,
        expires_in=STATE_MAX_AGE_S,
    )


@router.post(
    "/oauth/{provider}",
    summary="Finish a social login: exchange the provider's code for our tokens",
    responses=problem_responses(
        {
            400: "oauth_code_rejected, invalid_state (also: a state already used) or oauth_email_required",
            404: "unknown_provider",
            502: "oauth_provider_error: the provider could not be reached or answered badly",
            503: "oauth_not_configured",
        }
    ),
)
def oauth_login(
    provider: str,
    body: OAuthCodeIn,
    request: Request,
    session: SessionDep,
    ledger: LedgerDep,
    services: ServicesDep,
    oauth: OAuthDep,
    background: BackgroundTasks,
) -> TokenPair:
    oauth.provider(provider)  # 404 / 503 before anything else
    oauth.check_state(body.state, provider, body.redirect_uri, body.code_verifier)
    oauth_states.use_up(services.engine, body.state, STATE_MAX_AGE_S)  # single use, every replica
    identity = oauth.exchange(provider, body.code, body.redirect_uri, body.code_verifier)
    started = datetime.now(UTC)
    user = service.oauth_user(session, ledger, identity)
    _signup_credits(background, services, ledger, user, started)
    return service.issue_tokens(session, services.secret, user, sign_in=_sign_in(request, provider))


def _signup_credits(
    background: BackgroundTasks, services: Services, ledger: LedgerApplication, user: User, since: datetime
) -> None:
    """The sign-up credits of an account whose address this request verified, granted after
    the answer (once the request's transaction committed it): ``points.signup``."""
    if services.settings.signup_credits and signup.newly_verified(user.email_verified_at, since):
        background.add_task(
            signup.grant_signup_credits, services.engine, ledger, services.settings, user.id, user.email
        )


# --- mailed links -----------------------------------------------------------------------------
@router.post(
    "/verify-email",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Follow a verification (or email change) link, signed in as its account",
    responses=problem_responses(
        {
            400: "invalid_mail_token: unknown, used, expired, or another account's",
            401: "unauthorized",
            409: "email_taken: the new address of an email change was taken meanwhile",
        }
    ),
)
def verify_email(
    body: MailTokenIn,
    user: SignedInUser,
    session: SessionDep,
    ledger: LedgerDep,
    services: ServicesDep,
    background: BackgroundTasks,
) -> Response:
    started = datetime.now(UTC)
    verification.verify(session, user, body.token)
    _signup_credits(background, services, ledger, user, started)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/verify-email/resend",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,
    summary="Send the caller a new verification link (nothing when verified, or sent just now)",
    responses=problem_responses({401: "unauthorized"}),
)
def resend_verification(
    user: SignedInUser,
    session: SessionDep,
    limits: MailLimitsDep,
    mailer: MailerDep,
    background: BackgroundTasks,
) -> Response:
    mail = verification.verification_mail(session, limits, user)
    if mail is not None:
        background.add_task(mailer.deliver, mail)
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.post(
    "/password/forgot",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,
    summary="Mail a password-reset link (the same answer whether or not the account exists)",
    responses=problem_responses({422: "validation_error"}),
)
def forgot_password(
    body: ForgotPasswordIn,
    session: SessionDep,
    limits: MailLimitsDep,
    mailer: MailerDep,
    background: BackgroundTasks,
) -> Response:
    mail = verification.password_reset_mail(session, limits, body.email)
    if mail is not None:
        background.add_task(mailer.deliver, mail)
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.post(
    "/password/reset",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Set a new password with a reset link's token; every session of the account ends",
    responses=problem_responses({400: "invalid_mail_token", 422: "validation_error"}),
)
def reset_password(
    body: ResetPasswordIn,
    session: SessionDep,
    ledger: LedgerDep,
    services: ServicesDep,
    background: BackgroundTasks,
) -> Response:
    started = datetime.now(UTC)
    user = verification.reset_password(session, body.token, body.password)
    _signup_credits(background, services, ledger, user, started)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
