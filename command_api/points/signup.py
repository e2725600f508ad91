"""Sign-up credits (``VTO_SIGNUP_CREDITS``, ``VTO_SIGNUP_CREDITS_EXPIRE_DAYS``): a promotional lot
of credits granted once per account, and once per email address ever, when the account's
address is first verified: a verification link followed, a password reset, or a provider
sign-in with the provider's verified email (a new account, or one taken over). docs/billing-lots.md.

Once: the grant is claimed first, in a transaction of its own, by a row of
``signup_credit_grants`` keyed by the account and by the SHA-256 of the canonical address
(kept after the account is deleted, so registering again with the address grants nothing).
That row is the grant's idempotency key: of two attempts, one claims it; the other grants
nothing. The claim commits before the ledger grants, so a grant that reached the ledger is
never granted again; a grant the ledger refused gives its claim back. The endpoints run it
after their answer (a background task: after the request's transaction committed the verified
address)."""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from command_api.points import repository
from command_api.users.emails import canonical_email
from infra.settings import Settings
from ledger.application import LedgerApplication
from ledger.lots import Category

log = logging.getLogger(__name__)

REASON = "sign-up credits"  # the grant's reason in the ledger (and its point_usage line)
GRANTED_BY = "sign-up"  # the grant event's ``by``


def email_sha256(email: str) -> str:
    """What ``signup_credit_grants`` keeps of an address: the SHA-256 of its canonical form."""
    return hashlib.sha256(canonical_email(email).encode()).hexdigest()


def newly_verified(verified_at: datetime | None, since: datetime) -> bool:
    """Whether an address was verified at or after ``since`` (by the request that began then)."""
    return verified_at is not None and verified_at >= since


def grant_signup_credits(
    engine: Engine, ledger: LedgerApplication, settings: Settings, user_id: uuid.UUID, email: str
) -> int | None:
    """Grant the sign-up credits to the account once (see the module's text); the position
    of the grant, None when nothing was granted (none configured, or already had)."""
    amount = settings.signup_credits
    if amount <= 0:
        return None
    now = datetime.now(UTC)
    days = settings.signup_credits_expire_days
    expires_at = now + timedelta(days=days) if days else None
    with engine.begin() as conn:
        if not repository.claim_signup_credits(conn, email_sha256(email), user_id, amount, expires_at):
            return None
    try:
        result = ledger.grant(
            user_id,
            REASON,
            credits=amount,
            by=GRANTED_BY,
            expires_at=expires_at,
            category=Category.PROMOTIONAL,
        )
    except Exception:
        log.exception("sign-up credits for %s not granted; their claim is given back", user_id)
        with engine.begin() as conn:
            repository.release_signup_credits(conn, user_id)
        raise
    return result.position
