"""Dependencies injected into endpoints through ``Annotated`` aliases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from command_api.auth import tokens
from command_api.auth.errors import Unauthorized
from command_api.auth.oauth import OAuthProviders
from command_api.catalog.media import UrlSigner
from command_api.problems import Forbidden
from command_api.services import Services
from command_api.users import roles
from command_api.users.models import User
from infra.mail import Mailer
from infra.settings import Settings
from infra.storage import Storage
from ledger.application import LedgerApplication


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


def get_ledger(services: ServicesDep) -> LedgerApplication:
    return services.ledger


def get_storage(services: ServicesDep) -> Storage:
    return services.storage


def get_signer(services: ServicesDep) -> UrlSigner:
    return UrlSigner(services.storage, services.settings.signed_url_ttl_s)


def get_oauth(services: ServicesDep) -> OAuthProviders:
    return services.oauth


def get_mailer(services: ServicesDep) -> Mailer:
    return services.mailer


def get_session(services: ServicesDep) -> Iterator[Session]:
    """One session per request. Infrastructure owns the transaction: it commits when the
    endpoint returned normally (before the response is sent), and rolls back otherwise."""
    with services.sessions() as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        session.commit()


SettingsDep = Annotated[Settings, Depends(get_settings)]
LedgerDep = Annotated[LedgerApplication, Depends(get_ledger)]
StorageDep = Annotated[Storage, Depends(get_storage)]
OAuthDep = Annotated[OAuthProviders, Depends(get_oauth)]
MailerDep = Annotated[Mailer, Depends(get_mailer)]
SignerDep = Annotated[UrlSigner, Depends(get_signer)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

bearer = HTTPBearer(auto_error=False, description="An access token from /auth/login or /auth/refresh")


def current_user(
    services: ServicesDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("an access token is required")
    try:
        claims = tokens.decode(services.secret, credentials.credentials, "access")
    except tokens.InvalidToken as exc:
        raise Unauthorized("the access token is invalid or expired") from exc
    user = session.get(User, claims.user_id)
    if user is None or user.is_deleted or user.token_version != claims.token_version:
        raise Unauthorized("the access token is no longer valid")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def current_sign_in(
    services: ServicesDep,
    user: CurrentUser,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> uuid.UUID | None:
    """The sign-in (refresh-token family) of the caller's access token, already checked by
    ``current_user``; None for a token that names none."""
    assert credentials is not None  # current_user refused the request otherwise
    return tokens.decode(services.secret, credentials.credentials, "access").family


CurrentSignIn = Annotated[uuid.UUID | None, Depends(current_sign_in)]


def admin_user(session: SessionDep, user: CurrentUser) -> User:
    """The caller, if they hold the stored admin role (``vto admin add``); 403 otherwise."""
    if not roles.is_admin(session, user):
        raise Forbidden("this endpoint is for administrators")
    return user


AdminUser = Annotated[User, Depends(admin_user)]
