"""The SQL of the webhook tables (migration 0013; migrations/README.md describes them): the
follower's and the progress watcher's writes (synchronous, in their transactions) and the
sender's claims and records (asynchronous)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pipeline.webhooks import metrics, signing
from pipeline.webhooks.events import EventType, message_id

CHANNEL = "webhook_messages"  # NOTIFYed when messages are created or a redelivery is asked for
JOBS_PROJECTION = "jobs"  # a message is sent once this projection has applied its position


@dataclass(frozen=True)
class NewMessage:
    job_id: uuid.UUID
    user_id: uuid.UUID
    event_type: EventType
    key: str
    url: str
    event_at: datetime
    requested_at: datetime
    position: int  # the job read model must include this position before the body is rendered

    @property
    def id(self) -> uuid.UUID:
        return message_id(self.job_id, self.event_type, self.key)


# --------------------------------------------------------------------------- follower, watcher
def register_jobs(cur: psycopg.Cursor[Any], jobs: Sequence[tuple[Any, ...]]) -> None:
    """(job_id, user_id, url, events, requested_at, position, watch) of jobs that asked for
    webhooks; a job already registered is left as it is (a batch applied again)."""
    cur.executemany(
        "INSERT INTO webhook_jobs (job_id, user_id, url, events, requested_at, position, watch) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (job_id) DO NOTHING",
        jobs,
    )


def close_jobs(cur: psycopg.Cursor[Any], job_ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """Marks the jobs finished (no more progress messages); returns those that asked for
    webhooks, with whether a progress row shows they started."""
    cur.execute(
        "UPDATE webhook_jobs w SET open = false WHERE w.job_id = ANY(%s) "
        "RETURNING w.job_id, w.user_id, w.url, w.events, w.requested_at, w.started, w.position, "
        "(SELECT p.started_at FROM job_progress p WHERE p.job_id = w.job_id) AS progress_started_at",
        (list(job_ids),),
    )
    rows = cur.fetchall()  # first: in pipeline mode the description comes with the rows
    columns = [c.name for c in cur.description or ()]
    return [dict(zip(columns, row, strict=True)) for row in rows]


def mark_started(cur: psycopg.Cursor[Any], job_ids: Sequence[uuid.UUID]) -> None:
    cur.execute("UPDATE webhook_jobs SET started = true WHERE job_id = ANY(%s)", (list(job_ids),))


WATCHED = (
    "SELECT w.job_id, w.user_id, w.url, w.events, w.requested_at, w.position, w.started, "
    "w.progress_sent, w.progress_sent_at, w.progress_events, p.started_at, p.progress, p.updated_at, "
    "now() AS now "
    "FROM webhook_jobs w JOIN job_progress p ON p.job_id = w.job_id "
    "WHERE w.open AND w.watch AND (NOT w.started OR p.progress > w.progress_sent) "
    "ORDER BY w.job_id FOR UPDATE OF w SKIP LOCKED"
)


def watched_progress(cur: psycopg.Cursor[Any]) -> list[dict[str, Any]]:
    """Open jobs with news in ``job_progress`` (a start, or more progress than sent), locked
    (another watcher skips them)."""
    cur.execute(WATCHED)
    rows = cur.fetchall()  # first: in pipeline mode the description comes with the rows
    columns = [c.name for c in cur.description or ()]
    return [dict(zip(columns, row, strict=True)) for row in rows]


def update_progress(cur: psycopg.Cursor[Any], rows: Sequence[tuple[Any, ...]]) -> None:
    """(started, progress_sent, progress_sent_at, progress_events, job_id)."""
    cur.executemany(
        "UPDATE webhook_jobs SET started = %s, progress_sent = %s, progress_sent_at = %s, "
        "progress_events = %s WHERE job_id = %s",
        rows,
    )


def insert_messages(cur: psycopg.Cursor[Any], messages: Iterable[NewMessage]) -> int:
    """Creates the messages (a message that exists already is left as it is) and wakes the
    senders once the transaction commits."""
    rows = [
        (
            m.id,
            m.job_id,
            m.user_id,
            m.event_type.value,
            m.key,
            m.url,
            m.event_at,
            m.requested_at,
            m.position,
        )
        for m in messages
    ]
    if not rows:
        return 0
    cur.executemany(
        "INSERT INTO webhook_messages (id, job_id, user_id, event_type, event_key, url, event_at, "
        "requested_at, position, next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now()) "
        "ON CONFLICT (id) DO NOTHING",
        rows,
    )
    cur.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
    return len(rows)


def log_head(cur: psycopg.Cursor[Any]) -> int:
    cur.execute("SELECT coalesce(max(notification_id), 0) FROM ledger_events")
    row = cur.fetchone()
    return int(row[0]) if row else 0


def prune(conn: psycopg.Connection[Any], retention_days: int) -> int:
    """Deletes the messages (and their attempts) finished more than ``retention_days`` ago,
    the jobs finished as long ago, and the gone-marks and secrets no longer in force."""
    deleted = conn.execute(
        "DELETE FROM webhook_messages WHERE state <> 'pending' "
        "AND finished_at < now() - make_interval(days => %s)",
        (retention_days,),
    ).rowcount
    conn.execute(
        "DELETE FROM webhook_jobs w WHERE NOT w.open AND w.requested_at < now() - make_interval(days => %s) "
        "AND NOT EXISTS (SELECT 1 FROM webhook_messages m WHERE m.job_id = w.job_id AND m.state = 'pending')",
        (retention_days,),
    )
    conn.execute(
        "DELETE FROM webhook_endpoints_gone WHERE gone_at < now() - make_interval(days => %s)",
        (retention_days,),
    )
    conn.execute("DELETE FROM webhook_secrets WHERE expires_at < now()")
    return deleted


# --------------------------------------------------------------------------- sender
@dataclass(frozen=True)
class Candidate:
    id: uuid.UUID
    user_id: uuid.UUID


# Every account with messages pending (a loose index scan of webhook_messages_pending_idx: one
# probe per account, however many messages each one holds), then, per account, its oldest due
# messages: a backlog of one account never hides another's messages.
CANDIDATES = (
    "WITH RECURSIVE accounts(user_id) AS ("
    "  (SELECT user_id FROM webhook_messages WHERE state = 'pending' ORDER BY user_id LIMIT 1) "
    "  UNION ALL "
    "  SELECT (SELECT m.user_id FROM webhook_messages m WHERE m.state = 'pending' AND m.user_id > a.user_id "
    "          ORDER BY m.user_id LIMIT 1) FROM accounts a WHERE a.user_id IS NOT NULL"
    "), ready AS (SELECT coalesce((SELECT position FROM projection_tracking WHERE name = %(jobs)s), 0) "
    "  AS at) "
    "SELECT c.id, c.user_id FROM accounts a, ready r "
    "CROSS JOIN LATERAL (SELECT m.id, m.user_id, m.next_attempt_at FROM webhook_messages m "
    "  WHERE m.user_id = a.user_id AND m.state = 'pending' AND m.next_attempt_at <= now() "
    "  AND (m.leased_until IS NULL OR m.leased_until < now()) AND m.position <= r.at "
    "  ORDER BY m.next_attempt_at LIMIT %(per_account)s) c "
    "WHERE a.user_id IS NOT NULL AND a.user_id <> ALL(%(busy)s) "
    "ORDER BY c.next_attempt_at"
)


async def candidates(
    conn: psycopg.AsyncConnection[Any], per_account: int, busy: Sequence[uuid.UUID]
) -> list[Candidate]:
    cursor = await conn.execute(
        CANDIDATES, {"jobs": JOBS_PROJECTION, "per_account": per_account, "busy": list(busy)}
    )
    return [Candidate(row[0], row[1]) for row in await cursor.fetchall()]


async def redeliveries(conn: psycopg.AsyncConnection[Any], limit: int) -> list[Candidate]:
    cursor = await conn.execute(
        "SELECT id, user_id FROM webhook_messages WHERE redeliver_requested_at IS NOT NULL "
        "AND (leased_until IS NULL OR leased_until < now()) AND body IS NOT NULL "
        "ORDER BY redeliver_requested_at LIMIT %s",
        (limit,),
    )
    return [Candidate(row[0], row[1]) for row in await cursor.fetchall()]


@dataclass
class Leased:
    """A message taken for one attempt (``manual``: a redelivery someone asked for)."""

    id: uuid.UUID
    job_id: uuid.UUID
    user_id: uuid.UUID
    event_type: str
    url: str
    event_at: datetime
    requested_at: datetime
    body: str | None
    attempts: int
    state: str
    manual: bool


async def lease(conn: psycopg.AsyncConnection[Any], ids: Sequence[uuid.UUID], seconds: float) -> list[Leased]:
    """Takes the messages that are still free and due (another sender may have taken some
    since they were chosen) until now + ``seconds``."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "UPDATE webhook_messages SET leased_until = now() + make_interval(secs => %s) "
            "WHERE id = ANY(%s) AND (leased_until IS NULL OR leased_until < now()) "
            "AND ((state = 'pending' AND next_attempt_at <= now()) OR redeliver_requested_at IS NOT NULL) "
            "RETURNING id, job_id, user_id, event_type, url, event_at, requested_at, body, attempts, state, "
            "redeliver_requested_at IS NOT NULL AS manual",
            (seconds, list(ids)),
        )
        return [Leased(**row) for row in await cur.fetchall()]


async def gone_since(
    conn: psycopg.AsyncConnection[Any], endpoints: Iterable[tuple[uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, str], datetime]:
    """When each (account, URL) answered 410 Gone, for those that did."""
    pairs = list(set(endpoints))
    if not pairs:
        return {}
    cursor = await conn.execute(
        "SELECT g.user_id, g.url, g.gone_at FROM webhook_endpoints_gone g "
        "JOIN unnest(%s::uuid[], %s::text[]) AS e(user_id, url) ON (g.user_id, g.url) = (e.user_id, e.url)",
        ([p[0] for p in pairs], [p[1] for p in pairs]),
    )
    return {(row[0], row[1]): row[2] for row in await cursor.fetchall()}


FIRST_SIGNING_ROW = (
    "INSERT INTO webhook_secrets (user_id, secret) VALUES (%s, %s) "
    "ON CONFLICT (user_id) WHERE expires_at IS NULL DO NOTHING"
)


async def signing_keys(
    conn: psycopg.AsyncConnection[Any], users: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[bytes]]:
    """The secrets that sign each account's webhooks now, newest first; an account that has
    none yet gets its secret here (the one ``GET /webhooks/default/secret`` shows)."""
    wanted = list(set(users))
    keys: dict[uuid.UUID, list[bytes]] = {}
    for _ in range(2):
        cursor = await conn.execute(
            "SELECT user_id, secret FROM webhook_secrets WHERE user_id = ANY(%s) "
            "AND (expires_at IS NULL OR expires_at > now()) "
            "ORDER BY user_id, expires_at DESC NULLS FIRST, id DESC",
            (wanted,),
        )
        keys = {}
        for user_id, secret in await cursor.fetchall():
            keys.setdefault(user_id, []).append(bytes(secret))
        missing = [u for u in wanted if u not in keys]
        if not missing:
            break
        async with conn.cursor() as cur:
            await cur.executemany(FIRST_SIGNING_ROW, [(u, signing.new_secret()) for u in missing])
    return keys


async def store_bodies(
    conn: psycopg.AsyncConnection[Any], bodies: Mapping[uuid.UUID, str]
) -> dict[uuid.UUID, str]:
    """Keeps the bodies rendered for the first attempts (every attempt sends the same bytes),
    in one statement; returns the bodies stored (another sender's, where it was first)."""
    if not bodies:
        return {}
    cursor = await conn.execute(
        "UPDATE webhook_messages m SET body = coalesce(m.body, b.body) "
        "FROM unnest(%s::uuid[], %s::text[]) AS b(id, body) WHERE m.id = b.id RETURNING m.id, m.body",
        (list(bodies), list(bodies.values())),
    )
    return {row[0]: str(row[1]) for row in await cursor.fetchall()}


async def postpone(conn: psycopg.AsyncConnection[Any], messages: Sequence[uuid.UUID], seconds: float) -> None:
    """Gives messages back unattempted (their job is not in the read model yet)."""
    await conn.execute(
        "UPDATE webhook_messages SET leased_until = NULL, "
        "next_attempt_at = greatest(next_attempt_at, now() + make_interval(secs => %s)) WHERE id = ANY(%s)",
        (seconds, list(messages)),
    )


@dataclass(frozen=True)
class Attempt:
    at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None
    response_body: str | None
    manual: bool


@dataclass(frozen=True)
class Recorded:
    """What became of a leased message: the attempt made (None: none was, the endpoint is
    gone), its new state, automatic attempts made and seconds to the next one; ``gone``: the
    endpoint answered 410 (its other messages stop); ``back``: it answered 2xx to a
    redelivery (it is no longer gone)."""

    message: Leased
    attempt: Attempt | None
    state: str
    attempts: int
    retry_in: float | None
    gone: bool = False
    back: bool = False


async def record(conn: psycopg.AsyncConnection[Any], outcomes: Sequence[Recorded]) -> None:
    """One transaction for many messages (a group commit of the attempts that ended together):
    their attempts, new states and next attempts, their leases released."""
    attempts = [
        (o.message.id, a.at, a.status_code, a.duration_ms, a.error, a.response_body, a.manual)
        for o in outcomes
        if (a := o.attempt) is not None
    ]
    updates = [
        {
            "state": o.state,
            "attempts": o.attempts,
            "retry_in": o.retry_in,
            "manual": o.message.manual,
            "id": o.message.id,
        }
        for o in outcomes
    ]
    async with conn.transaction(), conn.cursor() as cur:
        if attempts:
            await cur.executemany(
                "INSERT INTO webhook_attempts (message_id, attempted_at, status_code, duration_ms, error, "
                "response_body, manual) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                attempts,
            )
        await cur.executemany(
            "UPDATE webhook_messages SET state = %(state)s, attempts = %(attempts)s, leased_until = NULL, "
            "next_attempt_at = CASE WHEN %(retry_in)s::float8 IS NULL THEN next_attempt_at "
            "  ELSE now() + make_interval(secs => %(retry_in)s::float8) END, "
            "finished_at = CASE WHEN %(state)s = 'pending' THEN NULL ELSE coalesce(finished_at, now()) END, "
            "redeliver_requested_at = CASE WHEN %(manual)s THEN NULL ELSE redeliver_requested_at END "
            "WHERE id = %(id)s",
            updates,
        )
        gone = [(o.message.user_id, o.message.url) for o in outcomes if o.gone]
        if gone:
            await cur.executemany(
                "INSERT INTO webhook_endpoints_gone (user_id, url, gone_at) VALUES (%s, %s, now()) "
                "ON CONFLICT (user_id, url) DO UPDATE SET gone_at = excluded.gone_at",
                gone,
            )
        back = [(o.message.user_id, o.message.url) for o in outcomes if o.back]
        if back:
            await cur.executemany("DELETE FROM webhook_endpoints_gone WHERE user_id = %s AND url = %s", back)


async def next_due_in(conn: psycopg.AsyncConnection[Any], busy: Sequence[uuid.UUID]) -> float | None:
    """Seconds until the next pending message of an account not at its limit falls due
    (None: none is pending; messages waiting for the read model are woken by its commits)."""
    cursor = await conn.execute(
        "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM webhook_messages "
        "WHERE state = 'pending' AND (leased_until IS NULL OR leased_until < now()) "
        "AND user_id <> ALL(%s) "
        "AND position <= coalesce((SELECT position FROM projection_tracking WHERE name = %s), 0)",
        (list(busy), JOBS_PROJECTION),
    )
    row = await cursor.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def pending_stats(conn: psycopg.AsyncConnection[Any]) -> tuple[int, float]:
    """How many messages are not delivered yet, and the age of the oldest (seconds)."""
    cursor = await conn.execute(metrics.PENDING_STATS)
    row = await cursor.fetchone()
    return (int(row[0]), float(row[1])) if row else (0, 0.0)
