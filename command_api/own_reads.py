"""The caller's reads of the read models in one round trip: the access token's check, the
read-your-writes check and the data, in one statement on an autocommit connection.

The query API's hottest routes (``GET /points``, ``GET /vto/jobs/{id}``, a project's gallery)
would otherwise read the user behind the token, then the position of the user's newest ledger
event, then the data, each inside ``BEGIN`` ... ``COMMIT``. Here one statement returns, beside
the data rows:

- the user's ``token_version``, whether they are deleted and whether the token's sign-in
  session ended (the token's check, as ``deps.current_user`` makes it);
- the position of the user's newest ledger event and the position the read models have
  committed: when they already include the caller's writes (the rule), the data rows are the
  answer; otherwise the read waits for the projections (``wait``) and is made again.

The data part is a lateral subquery with the columns the route needs and ``found`` (true on
each row it yields); a data part that yields nothing gives one row with ``found`` null."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, RowMapping, TextClause, text

from command_api.auth import tokens
from command_api.auth.errors import Unauthorized
from command_api.ops.metrics import READ_YOUR_WRITES_WAIT
from projections.events import EVENTS_TABLE

READ_MODELS = ("points", "jobs")  # the projections the API reads

# Whether the access token's sign-in session ended (logout, ended from another device, a
# password change): null for a token that names no session. Bind ``family``.
SESSION_ENDED = (
    "(SELECT s.ended_at IS NOT NULL FROM sign_in_sessions s "
    "WHERE s.id = CAST(:family AS uuid) AND s.user_id = u.id)"
)

_CALLER = (
    "SELECT u.token_version AS caller_token_version, u.deleted_at IS NOT NULL AS caller_deleted, "  # noqa: S608 (constant names)
    f"{SESSION_ENDED} AS caller_session_ended, "
    f"(SELECT e.notification_id FROM {EVENTS_TABLE} e WHERE e.originator_id = u.id "
    " ORDER BY e.originator_version DESC LIMIT 1) AS caller_position, "
    "(SELECT CASE WHEN count(*) = cardinality(CAST(:read_models AS text[])) THEN min(t.position) "
    "  ELSE 0 END FROM projection_tracking t WHERE t.name = ANY(:read_models)) AS caller_projected "
    "FROM users u WHERE u.id = :caller"
)


def own_read(data: str) -> TextClause:
    """The statement for a data part (see the module's text); build it once, at import."""
    return text(f"SELECT c.*, d.* FROM ({_CALLER}) c LEFT JOIN LATERAL ({data}) d ON true")  # noqa: S608


def revoked() -> Unauthorized:
    return Unauthorized("the access token is no longer valid")


def check_token(
    claims: tokens.Claims, token_version: int | None, deleted: bool | None, session_ended: bool | None
) -> None:
    """The token names a live user, their current token version, and (when it names one) a
    sign-in session that has not ended."""
    if token_version is None or deleted or token_version != claims.token_version or session_ended:
        raise revoked()


def token_params(claims: tokens.Claims) -> dict[str, Any]:
    """The parameters of ``SESSION_ENDED`` (and the caller's id) for ``claims``."""
    return {"caller": claims.user_id, "family": claims.family}


def read(
    conn: Connection,
    claims: tokens.Claims,
    statement: TextClause,
    params: dict[str, Any],
    wait: Callable[[int], object],
) -> list[RowMapping]:
    """The data rows of ``statement`` for the caller of ``claims``, once the read models
    include the caller's writes; ``Unauthorized`` for a token no longer valid."""
    bound = {**params, **token_params(claims), "read_models": list(READ_MODELS)}
    rows = conn.execute(statement, bound).mappings().all()
    if not rows:
        raise revoked()
    first = rows[0]
    check_token(claims, first["caller_token_version"], first["caller_deleted"], first["caller_session_ended"])
    position = first["caller_position"]
    if position is not None and (first["caller_projected"] or 0) < position:
        wait(position)  # ``Services.wait_for``: observes how long it waited
        rows = conn.execute(statement, bound).mappings().all()
    else:
        READ_YOUR_WRITES_WAIT.observe(0.0)  # the read models had the caller's writes already
    return [row for row in rows if row["found"]]
