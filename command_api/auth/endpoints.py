"""/auth: register, login, refresh, social login (Google, Kakao)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from command_api import problems
from command_api.auth import service
from command_api.auth.errors import RefreshTokenReused
from command_api.auth.oauth import STATE_MAX_AGE_S
from command_api.auth.schemas import (
    URL_MAX,
    AuthorizeOut,
    LoginIn,
    OAuthCodeIn,
    RefreshIn,
    RegisterIn,
    TokenPair,
    problem_responses,
)
from command_api.deps import LedgerDep, OAuthDep, ServicesDep, SessionDep
from command_api.users.schemas import UserOut
from command_api.users.service import user_out

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    summary="Create an account with email and password",
    responses=problem_responses({409: "email_taken: a live account has this email", 422: "validation_error"}),
)
def register(body: RegisterIn, session: SessionDep, ledger: LedgerDep, services: ServicesDep) -> UserOut:
    user = service.register(session, ledger, body)
    return user_out(services, user)


@router.post(
    "/login",
    summary="Exchange email and password for tokens",
    responses=problem_responses(
        {401: "invalid_credentials (unknown email, wrong password, deleted account)"}
    ),
)
def login(body: LoginIn, session: SessionDep, services: ServicesDep) -> TokenPair:
    return service.login(session, services.secret, body.email, body.password)


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
    redirect_uri: Annotated[str, Query(min_length=1, max_length=URL_MAX)],
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
            400: "oauth_code_rejected, invalid_state or oauth_email_required",
            404: "unknown_provider",
            502: "oauth_provider_error: the provider could not be reached or answered badly",
            503: "oauth_not_configured",
        }
    ),
)
def oauth_login(
    provider: str,
    body: OAuthCodeIn,
    session: SessionDep,
    ledger: LedgerDep,
    services: ServicesDep,
    oauth: OAuthDep,
) -> TokenPair:
    oauth.provider(provider)  # 404 / 503 before anything else
    if body.state is not None:
        oauth.check_state(body.state, provider, body.redirect_uri, body.code_verifier)
    identity = oauth.exchange(provider, body.code, body.redirect_uri, body.code_verifier)
    user = service.oauth_user(session, ledger, identity)
    return service.issue_tokens(session, services.secret, user)
