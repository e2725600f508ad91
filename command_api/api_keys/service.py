"""The rules of API keys: how a key is made, shown, stored and checked; the cap per account;
what a key may not do; the job-order rate limits of keys and accounts.

A key is ``vto_sk_`` + 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits). It
is shown once, when made; the database keeps its SHA-256 only. A fast, unsalted hash is
enough for a secret this random: nobody can guess a 256-bit value, so the slow, salted hashes
made for passwords (which people choose, and which are guessed from lists) would add nothing
but CPU on every request, and a deterministic hash is what lets the key be found by an
indexed lookup. A leaked table gives no key."""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from command_api.api_keys import repository
from command_api.api_keys.schemas import ApiKeyCreated, ApiKeyOut
from command_api.auth import tokens
from command_api.auth.errors import Unauthorized
from command_api.problems import DomainError, NotFound
from infra.settings import Settings

KEY_PREFIX = "vto_sk_"
SHOWN_CHARS = len(KEY_PREFIX) + 5  # the part of a key lists show
KEY_PATTERN = re.compile(r"^vto_sk_[A-Za-z0-9_-]{43}$")
KIND = "api_key"  # ``tokens.Claims.kind`` of a caller that sent a key
# A key does not expire; its claims say so with a date no check reaches.
NEVER = datetime(9999, 1, 1, tzinfo=UTC)

Clock = Callable[[], datetime] | None


class ApiKeyNotAllowed(DomainError):
    """The route manages the account's credentials (keys, password, email, sign-ins,
    deletion, the webhook secret's rotation) or is an admin's: a signed-in person only."""

    status, code = 403, "api_key_not_allowed"

    def __init__(self) -> None:
        super().__init__(
            "an API key cannot do this; sign in with the account's email and password (an access "
            "token) to manage keys, the password, the email, sign-ins or the account"
        )


class TooManyApiKeys(DomainError):
    status, code = 409, "too_many_api_keys"

    def __init__(self, cap: int) -> None:
        super().__init__(f"the account already holds {cap} API keys; revoke one first", limit=cap)


class JobRateLimited(DomainError):
    """Too many job orders from one key, or from all of one account's keys together."""

    status, code = 429, "job_rate_limited"

    def __init__(self, scope: str, per_minute: int, retry_after: int) -> None:
        whose = "this API key" if scope == "key" else "this account's API keys together"
        super().__init__(
            f"{whose} may order {per_minute} jobs a minute; retry in {retry_after} s",
            scope=scope,
            limit_per_minute=per_minute,
            retry_after=retry_after,
            headers={"Retry-After": str(retry_after)},
        )


def looks_like_key(credential: str) -> bool:
    """Whether a bearer credential is meant as an API key (else: an access token)."""
    return credential.startswith(KEY_PREFIX)


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _now(clock: Clock) -> datetime | None:
    return None if clock is None else clock()


def authenticate(conn: Connection, key: str, settings: Settings, clock: Clock) -> tokens.Claims:
    """The claims of a live key's owner (as an access token's would be: the user's id and
    current token version, so the checks made of tokens pass), found by the key's hash on
    every request: a revoked key fails on every replica at once. ``Unauthorized`` for a
    malformed, unknown or revoked key, or a deleted account."""
    if not KEY_PATTERN.fullmatch(key):
        raise Unauthorized("the API key is malformed")
    row = repository.authenticate(conn, key_hash(key), _now(clock), settings.api_key_last_used_interval_s)
    if row is None or row["deleted"]:
        raise Unauthorized("the API key is unknown or revoked")
    key_id = row["id"]
    return tokens.Claims(row["user_id"], row["token_version"], KIND, key_id, None, NEVER, api_key_id=key_id)


def create(
    session: Session, user_id: uuid.UUID, name: str, settings: Settings, clock: Clock
) -> ApiKeyCreated:
    """A new key of the account (at most ``api_key_max_per_account`` live ones), returned
    with its secret: the only time it is shown."""
    repository.lock_account(session, user_id)
    cap = settings.api_key_max_per_account
    if repository.count(session, user_id) >= cap:
        raise TooManyApiKeys(cap)
    key = new_key()
    row = repository.insert(
        session,
        {
            "id": uuid.uuid4(),
            "user": user_id,
            "name": name,
            "prefix": key[:SHOWN_CHARS],
            "hash": key_hash(key),
        },
        _now(clock),
    )
    return ApiKeyCreated(**ApiKeyOut.model_validate(dict(row)).model_dump(), key=key)


def list_keys(session: Session, user_id: uuid.UUID) -> list[ApiKeyOut]:
    return [ApiKeyOut.model_validate(dict(row)) for row in repository.list_keys(session, user_id)]


def revoke(session: Session, user_id: uuid.UUID, key_id: uuid.UUID) -> None:
    """Deletes the key: the next request with it, on any replica, is refused (keys are looked
    up on every request, nothing caches them)."""
    if not repository.delete(session, user_id, key_id):
        raise NotFound("API key")


def take_order(session: Session, claims: tokens.Claims, settings: Settings, clock: Clock) -> None:
    """One job order of a key: let through by the key's bucket and the account's, or neither
    changes (``JobRateLimited``, and the caller's transaction is rolled back). The key's row is
    always locked first, then the account's: two orders never wait on each other in a cycle."""
    assert claims.api_key_id is not None
    now = _now(clock)
    limits = (
        ("key", repository.key_bucket(claims.api_key_id), settings.api_key_jobs_per_minute),
        ("account", repository.account_bucket(claims.user_id), settings.api_account_jobs_per_minute),
    )
    for scope, bucket, per_minute in limits:
        wait = repository.take(session, bucket, per_minute, now)
        if wait is not None:
            raise JobRateLimited(scope, per_minute, max(1, math.ceil(wait - repository.SLACK_S)))
