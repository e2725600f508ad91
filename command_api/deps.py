"""Dependencies injected into endpoints through ``Annotated`` aliases.

The ones that only read what the process holds are ``async``: FastAPI runs a plain ``def``
dependency on a worker thread, a hop that costs more than the dependency itself."""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, TypeVar

import anyio
import anyio.to_thread
import sqlalchemy.exc
from anyio import CapacityLimiter
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from command_api.api_keys import service as api_keys
from command_api.auth import sessions, tokens
from command_api.auth.errors import Unauthorized
from command_api.auth.mail_limits import MailLimits
from command_api.auth.oauth import OAuthProviders
from command_api.auth.throttle import PasswordGuard, client_address
from command_api.catalog.media import UrlSigner
from command_api.own_reads import check_token, revoked
from command_api.problems import Forbidden, public_base
from command_api.services import Services
from command_api.users import repository as users
from command_api.users import roles
from command_api.users.models import User
from command_api.vto.live import JobEventHub
from infra.mail import Mailer
from infra.settings import Settings
from infra.storage import Storage
from ledger.application import LedgerApplication
from pipeline.webhooks.targets import TargetPolicy

T = TypeVar("T")
R = TypeVar("R")


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


async def get_ledger(services: ServicesDep) -> LedgerApplication:
    return services.ledger


async def get_storage(services: ServicesDep) -> Storage:
    return services.storage


async def get_signer(request: Request, services: ServicesDep) -> UrlSigner:
    """Signed links, absolute: under ``VTO_PUBLIC_BASE_URL``, or the request's own base URL."""
    return UrlSigner(services.storage, services.settings.signed_url_ttl_s, public_base(request))


async def get_webhook_targets(services: ServicesDep) -> TargetPolicy:
    """Where webhooks may go (``VTO_WEBHOOK_ALLOW_PRIVATE_NETWORKS``); tests replace the
    resolver."""
    return TargetPolicy(services.settings.webhook_allow_private_networks)


async def get_job_event_hub(request: Request, services: ServicesDep) -> JobEventHub:
    """The process's live job events hub (``command_api/vto/live.py``): one per app, made on
    first use; the app's lifespan closes it."""
    hub: JobEventHub | None = getattr(request.app.state, "job_event_hub", None)
    if hub is None:
        settings = services.settings
        hub = JobEventHub(
            services.url, poll_interval=settings.sse_poll_interval_s, renew_interval=settings.sse_keepalive_s
        )
        request.app.state.job_event_hub = hub
    return hub


JobEventHubDep = Annotated[JobEventHub, Depends(get_job_event_hub)]


async def get_oauth(services: ServicesDep) -> OAuthProviders:
    return services.oauth


async def get_mailer(services: ServicesDep) -> Mailer:
    return services.mailer


class SessionGate:
    """At most as many requests hold a session as the catalog pool has connections; the
    others wait on the event loop (holding no worker thread) at most ``timeout`` seconds,
    then get ``sqlalchemy.exc.TimeoutError`` (503 + Retry-After, docs/operations.md "Connection budget").

    Without it, worker threads would wait inside the pool for a connection, and a request
    holding one could find no thread left to run its endpoint or to give its connection
    back: every request then waits out the pool timeout. One semaphore per event loop (a
    test client runs its own loop)."""

    def __init__(self, slots: int, timeout: float) -> None:
        self.slots = slots
        self.timeout = timeout
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    async def acquire(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._by_loop.get(loop)
        if semaphore is None:
            semaphore = self._by_loop.setdefault(loop, asyncio.Semaphore(self.slots))
        if not semaphore.locked():
            await semaphore.acquire()  # free: no wait
            return semaphore
        try:
            await asyncio.wait_for(semaphore.acquire(), self.timeout)
        except TimeoutError:
            raise sqlalchemy.exc.TimeoutError(
                f"all {self.slots} catalog connections stayed in use for {self.timeout} s"
            ) from None
        return semaphore


def session_gate(request: Request, services: ServicesDep) -> SessionGate:
    gate: SessionGate | None = getattr(request.app.state, "session_gate", None)
    if gate is None:
        settings = services.settings
        gate = SessionGate(settings.db_pool_size + settings.db_max_overflow, settings.db_pool_timeout_s)
        request.app.state.session_gate = gate
    return gate


async def get_session(request: Request, services: ServicesDep) -> AsyncIterator[Session]:
    """One session per request. Infrastructure owns the transaction: it commits when the
    endpoint returned normally (before the response is sent), and rolls back otherwise.
    A request first takes one of the catalog pool's slots (``SessionGate``). Opening a session
    does no I/O (it connects on its first query), so only the commit or rollback runs on a
    worker thread, one outside the request threads' limit (as FastAPI does for the exit of
    its own context-manager dependencies), so that giving a connection back never waits."""
    semaphore = await session_gate(request, services).acquire()
    try:
        session = services.sessions()
        try:
            yield session
        except BaseException:
            await anyio.to_thread.run_sync(partial(_end, session, commit=False), limiter=CapacityLimiter(1))
            raise
        await anyio.to_thread.run_sync(partial(_end, session, commit=True), limiter=CapacityLimiter(1))
    finally:
        semaphore.release()


def _end(session: Session, *, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


async def get_password_guard(request: Request, services: ServicesDep) -> PasswordGuard:
    """The password checks of this request (throttled per account and client address)."""
    return PasswordGuard.of(services.engine, services.settings, client_address(request))


async def get_mail_limits(request: Request, services: ServicesDep) -> MailLimits:
    """The mail limits of this request (per account, recipient and client address)."""
    return MailLimits(services.settings, client_address(request))


SettingsDep = Annotated[Settings, Depends(get_settings)]
MailLimitsDep = Annotated[MailLimits, Depends(get_mail_limits)]
PasswordGuardDep = Annotated[PasswordGuard, Depends(get_password_guard)]
LedgerDep = Annotated[LedgerApplication, Depends(get_ledger)]
StorageDep = Annotated[Storage, Depends(get_storage)]
OAuthDep = Annotated[OAuthProviders, Depends(get_oauth)]
MailerDep = Annotated[Mailer, Depends(get_mailer)]
SignerDep = Annotated[UrlSigner, Depends(get_signer)]
WebhookTargetsDep = Annotated[TargetPolicy, Depends(get_webhook_targets)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

bearer = HTTPBearer(
    auto_error=False,
    description="An access token from /auth/login or /auth/refresh, or an API key (vto_sk_...) "
    "from POST /api-keys",
)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _api_key(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The API key the caller sent (``Bearer vto_sk_...``), if it sent one."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        return None
    return credentials.credentials if api_keys.looks_like_key(credentials.credentials) else None


def _key_claims(services: Services, key: str) -> Callable[[Connection], tokens.Claims]:
    return lambda conn: api_keys.authenticate(conn, key, services.settings, services.clock)


def _caller_claims(services: Services, credentials: HTTPAuthorizationCredentials | None) -> tokens.Claims:
    """The claims of an access token, or of an API key: a key is looked up in the database on
    every request (on an autocommit connection of its own, before the request's session
    connects), so a revoked key stops at once on every replica."""
    key = _api_key(credentials)
    if key is not None:
        return _on_connection(services, _key_claims(services, key))
    return _claims(services, credentials)


def _claims(services: Services, credentials: HTTPAuthorizationCredentials | None) -> tokens.Claims:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("an access token is required")
    try:
        return tokens.decode(services.secret, credentials.credentials, "access")
    except tokens.InvalidToken as exc:
        raise Unauthorized("the access token is invalid or expired") from exc


def current_user(
    services: ServicesDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    """The caller's stored user, from an access token or an API key."""
    claims = _caller_claims(services, credentials)
    if claims.family is None:
        user, ended = session.get(User, claims.user_id), None
    else:  # the user and whether the token's session ended, in one query
        found = session.execute(
            select(User, sessions.ended(claims.family)).where(User.id == claims.user_id)
        ).first()
        user, ended = found if found is not None else (None, None)
    if user is None:
        raise revoked()
    check_token(claims, user.token_version, user.is_deleted, ended)
    return user


CurrentUser = Annotated[User, Depends(current_user)]


@dataclass(frozen=True)
class Caller:
    """The signed-in caller as the read routes need them: the id, from a token checked
    against the stored user with one indexed read (no ORM load)."""

    id: uuid.UUID


def caught_up_caller(
    services: ServicesDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The caller, once the read models include every ledger event of theirs (read-your-
    writes for the routes that read the caller's balances and jobs): the read that checks the
    token against the stored user also gives the position of the caller's newest event, and the request
    waits for the projections to reach it (no wait when they already have, which is the rule;
    at most ``read_your_writes_timeout_s``). Commands therefore answer without waiting for
    the projections: whichever process serves the caller's next read catches up first."""
    claims = _caller_claims(services, credentials)
    state = users.token_state(session, claims.user_id, claims.family)
    if state is None:
        raise revoked()
    check_token(claims, state["token_version"], state["deleted"], state["session_ended"])
    services.wait_for(state["position"])
    return Caller(claims.user_id)


async def access_claims(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> tokens.Claims:
    """The access token's claims, verified (signature, expiry, kind) but not yet checked
    against the stored user: for the routes that check it in their own single statement
    (``own_reads``, the job order's catalog read), so that the request makes one round trip
    and one worker-thread hop (``run_on_connection``) instead of several. An API key is
    looked up first (one more round trip, for keys only); its claims carry the user's
    current token version, so the same checks pass."""
    key = _api_key(credentials)
    if key is not None:
        return await run_on_connection(request, services, _key_claims(services, key))
    return _claims(services, credentials)


async def run_on_connection(request: Request, services: Services, work: Callable[[Connection], T]) -> T:
    """``work`` on a worker thread with an autocommit connection of the catalog pool, taken
    under the ``SessionGate`` like a session: for routes whose reads are single statements
    (no BEGIN ... COMMIT round trips)."""
    semaphore = await session_gate(request, services).acquire()
    try:
        return await anyio.to_thread.run_sync(partial(_on_connection, services, work))
    finally:
        semaphore.release()


async def run_then(
    request: Request, services: Services, read: Callable[[Connection], R], then: Callable[[R], T]
) -> T:
    """``read`` on a catalog connection as ``run_on_connection`` does, then ``then`` on its
    answer, in the same worker-thread hop, with the connection (and its ``SessionGate`` slot)
    given back in between: for a request that must not hold the catalog's connection while it
    waits on something else (the job order's ledger append)."""
    semaphore = await session_gate(request, services).acquire()
    loop = asyncio.get_running_loop()
    released = False

    def release() -> None:  # on the event loop's thread, once
        nonlocal released
        if not released:
            released = True
            semaphore.release()

    def work() -> T:
        try:
            answer = _on_connection(services, read)
        finally:
            loop.call_soon_threadsafe(release)
        return then(answer)

    try:
        return await anyio.to_thread.run_sync(work)
    finally:
        release()


def _on_connection(services: Services, work: Callable[[Connection], T]) -> T:
    with services.engine.connect() as conn:
        return work(conn.execution_options(isolation_level="AUTOCOMMIT"))


AccessClaims = Annotated[tokens.Claims, Depends(access_claims)]
CaughtUpCaller = Annotated[Caller, Depends(caught_up_caller)]


async def signed_in_user(
    user: CurrentUser, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> User:
    """The caller, signed in with an access token: the routes that manage the account's
    credentials (API keys, password, email, sign-in sessions, deletion, the webhook secret's
    rotation) and the admin routes. An API key (checked first: an unknown one is 401) gets
    403 ``api_key_not_allowed``."""
    if _api_key(credentials) is not None:
        raise api_keys.ApiKeyNotAllowed()
    return user


SignedInUser = Annotated[User, Depends(signed_in_user)]


def current_sign_in(
    services: ServicesDep,
    user: SignedInUser,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> uuid.UUID | None:
    """The sign-in (refresh-token family) of the caller's access token, already checked by
    ``signed_in_user``; None for a token that names none."""
    return _claims(services, credentials).family


CurrentSignIn = Annotated[uuid.UUID | None, Depends(current_sign_in)]


async def current_claims(user: SignedInUser, claims: AccessClaims) -> tokens.Claims:
    """The claims of the caller's access token, already checked by ``signed_in_user``."""
    return claims


CurrentClaims = Annotated[tokens.Claims, Depends(current_claims)]


def admin_user(session: SessionDep, user: SignedInUser) -> User:
    """The caller, if they hold the stored admin role (``vto admin add``); 403 otherwise."""
    if not roles.is_admin(session, user):
        raise Forbidden(
            "this endpoint is for administrators; the server's operator makes an account an admin "
            "with `uv run vto admin add EMAIL`"
        )
    return user


AdminUser = Annotated[User, Depends(admin_user)]
