"""Single use of an OAuth ``state``, shared by every API replica (table ``oauth_states``,
migration 0013).

A state is signed and expires (``oauth.STATE_MAX_AGE_S``); once its checks pass, the sign-in
uses it up before the code goes to the provider: its SHA-256 is inserted in a short
transaction of its own that commits at once (so a failed exchange does not give it back, and
no connection is held while the provider answers). A second use, on any replica, finds the
row: 400 ``invalid_state``. Rows older than a state's lifetime say nothing more (the
signature's age refuses such a state) and are deleted a batch at a time."""

from __future__ import annotations

import hashlib

from sqlalchemy import Engine, text

from command_api.auth.errors import InvalidState

FORGET_BATCH = 100

_USE = text(
    "INSERT INTO oauth_states (state_hash) VALUES (:hash) ON CONFLICT DO NOTHING RETURNING state_hash"
)
_FORGET = text(
    """
    DELETE FROM oauth_states WHERE state_hash IN (
        SELECT state_hash FROM oauth_states
        WHERE used_at < now() - make_interval(secs => :max_age_s) LIMIT :batch
    )
    """
)


def use_up(engine: Engine, state: str, max_age_s: int) -> None:
    """Mark ``state`` used, or raise 400 ``invalid_state`` when it already was."""
    digest = hashlib.sha256(state.encode()).hexdigest()
    with engine.begin() as conn:
        fresh = conn.execute(_USE, {"hash": digest}).first() is not None
        conn.execute(_FORGET, {"max_age_s": max_age_s, "batch": FORGET_BATCH})
    if not fresh:
        raise InvalidState("this state was already used; start the sign-in again")
