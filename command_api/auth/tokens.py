"""JWT access and refresh tokens (pyjwt, HS256 only: ``alg: none`` and other algorithms are
rejected)."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

ALGORITHM = "HS256"
ACCESS_TTL = timedelta(minutes=15)
REFRESH_TTL = timedelta(days=30)
ISSUER = "vto"


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class Claims:
    user_id: uuid.UUID
    token_version: int
    kind: str  # "access" | "refresh"
    jti: uuid.UUID
    family: uuid.UUID | None
    expires_at: datetime
    api_key_id: uuid.UUID | None = None  # the caller sent this API key, not a token (api_keys)


def issue(
    secret: str,
    user_id: uuid.UUID,
    token_version: int,
    kind: str,
    ttl: timedelta,
    family: uuid.UUID | None = None,
    now: datetime | None = None,
) -> tuple[str, Claims]:
    now = now or datetime.now(UTC)
    claims = Claims(user_id, token_version, kind, uuid.uuid4(), family, now + ttl)
    payload = {
        "sub": str(user_id),
        "ver": token_version,
        "typ": kind,
        "jti": str(claims.jti),
        "iat": int(now.timestamp()),
        "exp": int(claims.expires_at.timestamp()),
        "iss": ISSUER,
    }
    if family is not None:
        payload["fam"] = str(family)
    return jwt.encode(payload, secret, algorithm=ALGORITHM), claims


def decode(secret: str, token: str, kind: str) -> Claims:
    """Verify signature, algorithm, expiry, issuer and kind; raise ``InvalidToken``.

    A token already verified is not verified again (signature, claims and their parsing are
    the same for the same text and secret): the last ``VERIFIED_CACHE_SIZE`` verified tokens
    are kept, and only their expiry is checked on each use. A client sends the same access
    token with every request until it expires."""
    claims = _verified(secret, token, kind)
    if claims.expires_at <= datetime.now(UTC):
        raise InvalidToken("Signature has expired")
    return claims


VERIFIED_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=VERIFIED_CACHE_SIZE)
def _verified(secret: str, token: str, kind: str) -> Claims:
    """The token's claims once verified (an ``InvalidToken`` is raised, and not kept)."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "sub", "typ", "jti", "iss"]},
        )
        if payload["typ"] != kind:
            raise InvalidToken(f"not an {kind} token")
        family = payload.get("fam")
        return Claims(
            user_id=uuid.UUID(payload["sub"]),
            token_version=int(payload.get("ver", 0)),
            kind=payload["typ"],
            jti=uuid.UUID(payload["jti"]),
            family=uuid.UUID(family) if family else None,
            expires_at=datetime.fromtimestamp(payload["exp"], UTC),
        )
    except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
        raise InvalidToken(str(exc)) from exc
