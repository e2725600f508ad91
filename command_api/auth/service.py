"""Accounts and tokens: register, password login, refresh-token rotation, social login.

Functions here work on the request's session and never commit (the infrastructure does, when
the endpoint returns). They raise the domain errors of ``command_api.auth.errors`` for the
caller's mistakes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from command_api.auth import mail_tokens, passwords, sessions, tokens
from command_api.auth.errors import (
    EmailTaken,
    InvalidCredentials,
    InvalidRefreshToken,
    OAuthEmailRequired,
    RefreshTokenReused,
    SignInConflict,
)
from command_api.auth.oauth import ProviderIdentity
from command_api.auth.schemas import RegisterIn, TokenPair
from command_api.auth.sessions import SignIn
from command_api.auth.throttle import PasswordGuard
from command_api.users.emails import valid_email
from command_api.users.models import OAuthIdentity, RefreshToken, User
from command_api.users.repository import live_user_by_email
from command_api.users.schemas import NAME_MAX
from ledger.application import LedgerApplication


def _now() -> datetime:
    return datetime.now(UTC)


def _add_user(session: Session, ledger: LedgerApplication, user: User) -> User:
    """Insert the user (409 when a live account took the email meanwhile) and open its ledger
    account. The ledger account is opened after the row is flushed but before the request
    commits: if the request fails afterwards, an account with no user row is left in the
    ledger. That is harmless: it holds nothing and no user id will ever refer to it."""
    try:
        with session.begin_nested():
            session.add(user)
            session.flush()
    except IntegrityError as exc:
        raise EmailTaken() from exc
    ledger.open_account(user.id)
    return user


# --- register and login -----------------------------------------------------------------------
def register(session: Session, ledger: LedgerApplication, body: RegisterIn) -> User:
    if live_user_by_email(session, body.email) is not None:
        raise EmailTaken()
    user = User(
        email=body.email,  # canonical (schemas)
        password_hash=passwords.hash_password(body.password),
        name=body.name,
        language=body.language,
        token_version=0,
    )
    return _add_user(session, ledger, user)


def login(
    session: Session, secret: str, guard: PasswordGuard, email: str, password: str, sign_in: SignIn
) -> TokenPair:
    """Tokens for a live user with this password; the same 401 for every failure (429 from
    the ``guard``: ``command_api.auth.throttle``). ``email`` is canonical (``LoginIn``)."""
    found: list[User] = []

    def verify() -> bool:
        user = live_user_by_email(session, email)
        found.extend([user] if user is not None else [])
        return passwords.verify_password(user.password_hash if user else None, password) and user is not None

    if not guard.check(email, verify):
        raise InvalidCredentials()
    [user] = found
    assert user.password_hash is not None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    return issue_tokens(session, secret, user, sign_in=sign_in)


# --- tokens -----------------------------------------------------------------------------------
def issue_tokens(
    session: Session,
    secret: str,
    user: User,
    family: uuid.UUID | None = None,
    *,
    sign_in: SignIn | None = None,
) -> TokenPair:
    """An access token and a refresh token (recorded by its jti, in ``family``: the old one on
    rotation; a new one, a new session started by ``sign_in``, otherwise). The access token
    names its family too: its session (``command_api.auth.sessions``), which a logout or a
    password change can end or keep."""
    if (family is None) == (sign_in is None):
        raise ValueError("give the family of a rotation, or the sign-in of a new session")
    new = family is None
    family = family or uuid.uuid4()
    access, _ = tokens.issue(secret, user.id, user.token_version, "access", tokens.ACCESS_TTL, family=family)
    refresh, claims = tokens.issue(
        secret, user.id, user.token_version, "refresh", tokens.REFRESH_TTL, family=family
    )
    if sign_in is not None:
        sessions.start(session, user.id, family, sign_in, claims.expires_at)
    else:
        sessions.touch(session, family, claims.expires_at)
    if new:
        session.flush()  # the session row before its first token (foreign keys in time order)
    session.add(RefreshToken(jti=claims.jti, family=family, user_id=user.id, expires_at=claims.expires_at))
    session.flush()
    return TokenPair(
        access_token=access,
        refresh_token=refresh,
        token_type="bearer",  # noqa: S106
        expires_in=int(tokens.ACCESS_TTL.total_seconds()),
    )


def refresh(session: Session, secret: str, token: str) -> TokenPair:
    """Rotate: the presented refresh token becomes used and the next one of its family is
    issued. A used token presented again revokes the whole family (``RefreshTokenReused``,
    raised after the revocation was written to the session: the caller must keep it)."""
    try:
        claims = tokens.decode(secret, token, "refresh")
    except tokens.InvalidToken as exc:
        raise InvalidRefreshToken() from exc
    if claims.family is None:
        raise InvalidRefreshToken()
    now = _now()
    # Claim the token atomically: of two concurrent uses, exactly one gets the row.
    claimed = session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.jti == claims.jti,
            RefreshToken.user_id == claims.user_id,
            RefreshToken.family == claims.family,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(RefreshToken.token_version)
    ).first()
    if claimed is None:
        row = session.get(RefreshToken, claims.jti)
        if row is None or row.user_id != claims.user_id or row.family != claims.family:
            raise InvalidRefreshToken()
        if row.revoked_at is not None:
            raise InvalidRefreshToken("the refresh token was revoked")
        if row.used_at is not None:
            revoke_family(session, row.user_id, row.family, now)
            raise RefreshTokenReused()
        raise InvalidRefreshToken()
    # A password change may have carried this sign-in over to the new token version.
    carried = claimed.token_version
    user = session.get(User, claims.user_id)
    needed = claims.token_version if carried is None else carried
    if user is None or user.is_deleted or user.token_version != needed:
        raise InvalidRefreshToken("the refresh token is no longer valid")
    return issue_tokens(session, secret, user, family=claims.family)


def revoke_family(
    session: Session, user_id: uuid.UUID, family: uuid.UUID, now: datetime | None = None
) -> bool:
    """End the user's session ``family``: its refresh tokens are revoked, its access tokens
    stop. False when it was not a live session of the user's."""
    now = now or _now()
    ended = sessions.end(session, user_id, family=family, now=now)
    session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.family == family, RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None)
        )
        .values(revoked_at=now)
    )
    return bool(ended)


def revoke_all(
    session: Session, user_id: uuid.UUID, now: datetime | None = None, *, keep: uuid.UUID | None = None
) -> None:
    """End every session of the user but ``keep``: their refresh tokens are revoked (access
    tokens die with their session, and with ``token_version`` where the caller bumps it)."""
    now = now or _now()
    sessions.end(session, user_id, keep=keep, now=now)
    query = update(RefreshToken).where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
    if keep is not None:
        query = query.where(RefreshToken.family != keep)
    session.execute(query.values(revoked_at=now))


def end_every_session(session: Session, user: User, now: datetime | None = None) -> None:
    """Every access and refresh token of the user stops working."""
    user.token_version += 1
    revoke_all(session, user.id, now)
    session.flush()


# --- social login -----------------------------------------------------------------------------
def _usable_email(identity: ProviderIdentity) -> str | None:
    """The provider's verified email in its canonical form; None when it shared none, did not
    verify it, or sent something that is not a valid address."""
    if not identity.email_verified or identity.email is None:
        return None
    try:
        return valid_email(identity.email)
    except ValueError:
        return None


def take_over_for_provider(session: Session, user: User) -> None:
    """A provider has just proven that its user owns ``user.email``, which nobody had proven
    before: whatever was set up on the account until then may be someone else's. The password
    goes (the owner sets one with a password reset), every session and every outstanding mailed
    link ends, and the email counts as proven."""
    now = _now()
    user.password_hash = None
    user.email_verified_at = now
    end_every_session(session, user, now)
    mail_tokens.revoke(session, user.id, now=now)


def oauth_user(session: Session, ledger: LedgerApplication, identity: ProviderIdentity) -> User:
    """The live user for a provider identity: linked by (provider, subject) first, then by
    verified email to a live user, else a new user (and its ledger account). An identity still
    linked to a deleted user is moved to the live (or new) account.

    The provider's verified email proves the address. An account whose email nobody had proven
    yet is taken over first (``take_over_for_provider``): no password or session that someone
    set up before keeps access to the account the provider's user ends up with."""
    link = session.scalars(
        select(OAuthIdentity)
        .where(OAuthIdentity.provider == identity.provider, OAuthIdentity.subject == identity.subject)
        .with_for_update()
    ).first()
    email = _usable_email(identity)
    if link is not None:
        linked = session.get(User, link.user_id, with_for_update=True)
        if linked is not None and not linked.is_deleted:
            if linked.email_verified_at is None and email == linked.email:
                take_over_for_provider(session, linked)
            return linked
    if email is None:
        raise OAuthEmailRequired(
            f"{identity.provider} did not share a verified email address; allow access to "
            "your email at the provider and try again",
        )
    user = live_user_by_email(session, email, for_update=True)
    if user is None:
        name = (identity.name or "")[:NAME_MAX].strip() or None
        user = _add_user(
            session,
            ledger,
            User(
                email=email,
                password_hash=None,
                name=name,
                language="en",
                token_version=0,
                email_verified_at=_now(),
            ),
        )
    elif user.email_verified_at is None:
        take_over_for_provider(session, user)
    if link is not None:
        link.user_id, link.email = user.id, email
    else:
        try:
            with session.begin_nested():
                session.add(
                    OAuthIdentity(
                        provider=identity.provider, subject=identity.subject, user_id=user.id, email=email
                    )
                )
                session.flush()
        except IntegrityError as exc:  # the same identity signing in twice at once
            raise SignInConflict() from exc
    return user
