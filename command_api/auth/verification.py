"""Proof of an email address, and the credentials it guards: verification links, password
reset and change, email change. (What a provider sign-in takes over: ``service.oauth_user``.)

Links carry a token of ``command_api.auth.mail_tokens``, which works only while the account
still has the address it was sent to. Functions here work on the request's session and never
commit; the ones that send mail return the ``Mail`` for the endpoint to deliver after the
commit (``None``: nothing to send).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from command_api.auth import mail_tokens, passwords
from command_api.auth.errors import (
    EmailTaken,
    EmailUnchanged,
    InvalidMailToken,
    PasswordNotSet,
    WrongPassword,
)
from command_api.auth.mail_limits import MailLimits
from command_api.auth.mail_tokens import consume, issue
from command_api.auth.service import end_every_session, revoke_all
from command_api.auth.throttle import PasswordGuard
from command_api.users.emails import canonical_email
from command_api.users.models import (
    CHANGE_EMAIL,
    RESET_PASSWORD,
    VERIFY_EMAIL,
    RefreshToken,
    User,
)
from command_api.users.repository import live_user, live_user_by_email
from infra.mail import Mail
from infra.settings import Settings


def _now() -> datetime:
    return datetime.now(UTC)


def _link(settings: Settings, page: str, token: str) -> str:
    return f"{settings.app_url.rstrip('/')}/{page}?token={token}"


# --- email verification -----------------------------------------------------------------------
def verification_mail(session: Session, limits: MailLimits, user: User) -> Mail | None:
    """A link proving ``user.email``; None when already verified, or over a mail limit
    (``mail_limits``: e.g. another account claimed the address in the window)."""
    settings = limits.settings
    if user.email_verified_at is not None or not limits.allow(session, user, VERIFY_EMAIL, user.email):
        return None
    token = issue(
        session, user, VERIFY_EMAIL, user.email, settings.email_verification_ttl_s, limits.client_address
    )
    link = _link(settings, "verify-email", token)
    hours = settings.email_verification_ttl_s // 3600
    text = (
        f"Confirm that {user.email} is your address for your VTO account:\n\n{link}\n\n"
        f"Open the link while signed in; it works once, for {hours or 1} hour(s).\n"
        "If you did not create this account, ignore this mail: nothing is confirmed without it."
    )
    return Mail(to=user.email, subject="Confirm your email address", text=text, link=link)


def verify(session: Session, caller: User, token: str) -> None:
    """Follow a verification or email-change link (signed in as its account): the address is
    proven; an email change applies now (409 ``email_taken`` if a live account took it)."""
    row = consume(session, token, (VERIFY_EMAIL, CHANGE_EMAIL))
    if row.user_id != caller.id:
        raise InvalidMailToken("this link belongs to another account; sign in to that account first")
    now = _now()
    if row.purpose == VERIFY_EMAIL:
        if row.email != caller.email:
            raise InvalidMailToken("this link was sent to an address the account no longer has")
        caller.email_verified_at = caller.email_verified_at or now
        session.flush()
        return
    other = live_user_by_email(session, row.email)
    if other is not None and other.id != caller.id:
        raise EmailTaken()
    try:
        with session.begin_nested():
            caller.email, caller.email_verified_at = row.email, now
            session.flush()
    except IntegrityError as exc:  # taken between the check and the write
        raise EmailTaken() from exc
    # Links sent to the old address (or for another new one) stop working.
    mail_tokens.revoke(session, caller.id, now=now)


# --- password reset ---------------------------------------------------------------------------
def password_reset_mail(session: Session, limits: MailLimits, email: str) -> Mail | None:
    """A reset link for the live account with this email; None (and no trace of it in the
    answer) for an unknown email, or over a mail limit (``mail_limits``)."""
    settings = limits.settings
    user = live_user_by_email(session, email)
    if user is None or not limits.allow(session, user, RESET_PASSWORD, user.email):
        return None
    token = issue(
        session, user, RESET_PASSWORD, user.email, settings.password_reset_ttl_s, limits.client_address
    )
    link = _link(settings, "reset-password", token)
    minutes = settings.password_reset_ttl_s // 60
    text = (
        f"Someone asked to reset the password of the VTO account {user.email}.\n\n"
        f"Choose a new password here (the link works once, for {minutes} minutes):\n\n{link}\n\n"
        "Every device signed in to the account is signed out. If you did not ask for this, "
        "ignore this mail: your password stays as it is."
    )
    return Mail(to=user.email, subject="Reset your password", text=text, link=link)


def reset_password(session: Session, token: str, password: str) -> User:
    """Set the password from a reset link: every session ends, every outstanding link of the
    account dies, and the email counts as proven (the link reached it)."""
    row = consume(session, token, (RESET_PASSWORD,))
    user = live_user(session, row.user_id)
    if user is None or user.email != row.email:
        raise InvalidMailToken("this link is no longer valid for the account")
    now = _now()
    user.password_hash = passwords.hash_password(password)
    user.email_verified_at = user.email_verified_at or now
    end_every_session(session, user, now)
    mail_tokens.revoke(session, user.id, now=now)
    return user


# --- signed-in changes ------------------------------------------------------------------------
def check_password(guard: PasswordGuard, user: User, password: str) -> None:
    """The signed-in caller's password, counted like a login (the same account counter and
    429: ``command_api.auth.throttle``); 403 ``wrong_password``, 409 ``password_not_set``."""
    password_hash = user.password_hash
    if password_hash is None:
        raise PasswordNotSet()
    if not guard.check(user.email, lambda: passwords.verify_password(password_hash, password)):
        raise WrongPassword()


def change_password(
    session: Session,
    guard: PasswordGuard,
    user: User,
    current: str,
    new: str,
    keep_family: uuid.UUID | None,
) -> None:
    """Every other session ends. The caller's own sign-in (``keep_family``, the refresh family
    of its access token) is carried over: its access token stops like every other, and its
    refresh token gives the next pair. Without a family every session ends. Reset and
    email-change links sent before stop working."""
    check_password(guard, user, current)
    now = _now()
    user.password_hash = passwords.hash_password(new)
    user.token_version += 1
    if keep_family is not None:
        session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.user_id == user.id,
                RefreshToken.family == keep_family,
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
            )
            .values(token_version=user.token_version)
        )
    revoke_all(session, user.id, now, keep=keep_family)
    mail_tokens.revoke(session, user.id, (RESET_PASSWORD, CHANGE_EMAIL), now)
    session.flush()


def email_change_mail(
    session: Session, limits: MailLimits, guard: PasswordGuard, user: User, email: str, password: str
) -> Mail | None:
    """A link to the new address; the change applies when it is followed (``verify``). 409
    when a live account has that address; None over a mail limit (``mail_limits``: e.g.
    another account asked for this address in the window)."""
    settings = limits.settings
    check_password(guard, user, password)
    email = canonical_email(email)
    if email == user.email:
        raise EmailUnchanged()
    if live_user_by_email(session, email) is not None:
        raise EmailTaken()
    if not limits.allow(session, user, CHANGE_EMAIL, email):
        return None
    mail_tokens.revoke(session, user.id, (CHANGE_EMAIL,))  # only the newest request counts
    token = issue(
        session, user, CHANGE_EMAIL, email, settings.email_verification_ttl_s, limits.client_address
    )
    link = _link(settings, "verify-email", token)
    text = (
        f"Confirm that {email} should become the address of the VTO account {user.email}:\n\n"
        f"{link}\n\nOpen the link while signed in; it works once. If you did not ask for this, "
        "ignore this mail."
    )
    return Mail(to=email, subject="Confirm your new email address", text=text, link=link)
