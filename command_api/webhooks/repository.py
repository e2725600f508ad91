"""Queries of the webhook tables for the API (migration 0013): the account's signing secrets,
a job's messages and attempts, redelivery requests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import RowMapping, text
from sqlalchemy.orm import Session

from command_api.pagination import Key
from pipeline.webhooks import signing
from pipeline.webhooks.store import CHANNEL


def lock_secrets(session: Session, user_id: uuid.UUID) -> None:
    """Serialises the changes of one account's secrets (two rotations at once), for the
    transaction."""
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"webhook-secrets:{user_id}"}
    )


def current_secret(session: Session, user_id: uuid.UUID) -> bytes | None:
    secret = session.execute(
        text("SELECT secret FROM webhook_secrets WHERE user_id = :u AND expires_at IS NULL"), {"u": user_id}
    ).scalar()
    return None if secret is None else bytes(secret)


def add_secret(session: Session, user_id: uuid.UUID) -> None:
    """A new current secret (the caller made sure there is none, under ``lock_secrets``)."""
    session.execute(
        text(
            "INSERT INTO webhook_secrets (user_id, secret) VALUES (:u, :s) "
            "ON CONFLICT (user_id) WHERE expires_at IS NULL DO NOTHING"
        ),
        {"u": user_id, "s": signing.new_secret()},
    )


def retire_secrets(session: Session, user_id: uuid.UUID, overlap_s: int) -> None:
    """The current secret signs ``overlap_s`` more seconds; older retired ones stop now (two
    secrets at most sign at once)."""
    session.execute(
        text("UPDATE webhook_secrets SET expires_at = now() WHERE user_id = :u AND expires_at > now()"),
        {"u": user_id},
    )
    session.execute(
        text(
            "UPDATE webhook_secrets SET expires_at = now() + make_interval(secs => :s) "
            "WHERE user_id = :u AND expires_at IS NULL"
        ),
        {"u": user_id, "s": overlap_s},
    )


def job_owner(session: Session, job_id: uuid.UUID) -> uuid.UUID | None:
    owner = session.execute(text("SELECT user_id FROM vto_job WHERE job_id = :j"), {"j": job_id}).scalar()
    return owner if owner is None or isinstance(owner, uuid.UUID) else uuid.UUID(str(owner))


MESSAGE_COLUMNS = (
    "id, event_type, url, state, created_at, next_attempt_at, finished_at, redeliver_requested_at, body"
)


def messages(session: Session, job_id: uuid.UUID, limit: int, after: Key | None) -> list[RowMapping]:
    """The job's messages, oldest first: at most ``limit`` after the key (created_at, id)."""
    params: dict[str, Any] = {"j": job_id, "limit": limit}
    where = "job_id = :j"
    if after is not None:
        where += " AND (created_at, id) > (:ac, :ai)"
        params["ac"], params["ai"] = after
    query = (
        f"SELECT {MESSAGE_COLUMNS} FROM webhook_messages WHERE {where} ORDER BY created_at, id LIMIT :limit"  # noqa: S608
    )
    return list(session.execute(text(query), params).mappings())


def attempts(session: Session, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[RowMapping]]:
    rows = session.execute(
        text(
            "SELECT message_id, attempted_at, status_code, duration_ms, error, response_body, manual "
            "FROM webhook_attempts WHERE message_id = ANY(:ids) ORDER BY message_id, attempted_at, id"
        ),
        {"ids": list(message_ids)},
    ).mappings()
    found: dict[uuid.UUID, list[RowMapping]] = {}
    for row in rows:
        found.setdefault(row["message_id"], []).append(row)
    return found


REDELIVER = (
    "UPDATE webhook_messages SET redeliver_requested_at = coalesce(redeliver_requested_at, now()) "
    "WHERE id = :m AND job_id = :j AND body IS NOT NULL"
)


def request_redelivery(session: Session, job_id: uuid.UUID, message_id: uuid.UUID) -> RowMapping | None:
    """Asks for one more attempt of a message that has been attempted (one sent already is
    its body), and wakes the senders on commit; the message as it is now (None: no such
    message of that job)."""
    requested = f"{REDELIVER} RETURNING {MESSAGE_COLUMNS}"
    row = session.execute(text(requested), {"m": message_id, "j": job_id}).mappings().first()
    if row is not None:
        session.execute(text("SELECT pg_notify(:c, '')"), {"c": CHANNEL})
        return row
    return (
        session.execute(
            text(f"SELECT {MESSAGE_COLUMNS} FROM webhook_messages WHERE id = :m AND job_id = :j"),  # noqa: S608
            {"m": message_id, "j": job_id},
        )
        .mappings()
        .first()
    )
