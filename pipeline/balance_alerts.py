"""Balance alerts: a ``balance.low`` notification when a line of ``point_usage`` takes a
balance below the account's threshold (``PUT /points/alerts``), by email and, when the
account has webhooks, as a signed webhook.

A crossing is a line that moves a balance down from ``below`` or more to less than ``below``:
one per crossing, and the next one needs the balance back at ``below`` or more first (re-armed
by the lines themselves, no state to keep). Charges, expiries and negative adjustments all
count.

``BalanceAlerts`` runs beside the webhook dispatcher (``vto webhooks``, inside ``vto serve``).
Each pass, in one transaction: it locks its ``projection_tracking`` row (``balance_alerts``;
several processes take turns), reads the lines after its position up to where both the
``points`` projection and the webhook follower are (the lines of accounts with thresholds;
the follower has recorded the jobs that name each account's webhook URL by then), writes one
``balance_alerts`` row per crossing (its id derived from the line: written again after a
crash, it is the same row) and, for an account whose jobs asked for webhooks, a ``balance.low`` message in
``webhook_messages`` with its body (the webhook sender signs and delivers it as any other,
with its retries), then advances its position. Mails are then sent for the rows not mailed
yet (at least once: a row is marked once its mail was delivered; a failed delivery is retried
at the next passes, ``MAIL_ATTEMPTS`` in all)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from infra.database import ReopeningConnection
from infra.mail import Mail, Mailer
from infra.threads import BackgroundLoop
from pipeline.webhooks import events as webhook_events
from pipeline.webhooks import store as webhook_store

log = logging.getLogger(__name__)

NAME = "balance_alerts"
EVENT_TYPE = "balance.low"
MAIL_ATTEMPTS = 5
BATCH = 1000

# The lines after the follower's position, up to the points projection's, of the accounts
# with a threshold on their source, in log order.
LINES = (
    "SELECT u.position, u.user_id, u.source, u.amount, u.balance_after, u.created_at, t.below "
    "FROM point_usage u JOIN balance_alert_thresholds t ON t.user_id = u.user_id AND t.source = u.source "
    "WHERE u.position > %(after)s AND u.position <= %(upto)s AND u.amount < 0 "
    "AND u.balance_after < t.below AND u.balance_after - u.amount >= t.below "
    "ORDER BY u.position LIMIT %(limit)s"
)
# The URL an account's webhooks go to: that of its newest job that asked for one, unless
# that endpoint answered 410 Gone.
WEBHOOK_URL = (
    "SELECT w.url FROM webhook_jobs w WHERE w.user_id = %s AND NOT EXISTS "
    "(SELECT 1 FROM webhook_endpoints_gone g WHERE g.user_id = w.user_id AND g.url = w.url) "
    "ORDER BY w.requested_at DESC LIMIT 1"
)


def alert_id(user_id: uuid.UUID, source: str, position: int) -> uuid.UUID:
    return uuid.uuid5(webhook_events.NAMESPACE, f"{user_id}/{EVENT_TYPE}/{source}/{position}")


@dataclass(frozen=True)
class Crossing:
    position: int
    user_id: uuid.UUID
    source: str
    amount: int
    balance: int
    at: datetime
    below: int

    @property
    def id(self) -> uuid.UUID:
        return alert_id(self.user_id, self.source, self.position)

    def data(self) -> dict[str, Any]:
        """The webhook's ``data`` (and what the mail says)."""
        return {
            "alert_id": str(self.id),
            "user_id": str(self.user_id),
            "source": self.source,
            "threshold": self.below,
            "balance": self.balance,
            "position": self.position,
        }


def follow(
    conn: psycopg.Connection[Any], *, limit: int = BATCH, behind: tuple[str, ...] = ("points",)
) -> list[Crossing]:
    """One batch: the crossings after the follower's position, recorded with it in one
    transaction; returns them. It goes no further than the projections ``behind`` have
    applied (``points``: the lines; the webhook follower's ``webhooks``: the jobs that name
    the account's webhook URL)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "INSERT INTO projection_tracking (name, position) VALUES (%s, 0) ON CONFLICT (name) DO NOTHING",
            (NAME,),
        )
        cur.execute("SELECT position FROM projection_tracking WHERE name = %s FOR UPDATE", (NAME,))
        (after,) = cur.fetchone() or (0,)
        cur.execute(
            "SELECT CASE WHEN count(*) = %s THEN min(position) ELSE 0 END FROM projection_tracking "
            "WHERE name = ANY(%s)",
            (len(behind), list(behind)),
        )
        (upto,) = cur.fetchone() or (0,)
        if upto <= after:
            return []
        cur.execute(LINES, {"after": after, "upto": upto, "limit": limit})
        crossings = [Crossing(*row) for row in cur.fetchall()]
        reached = crossings[-1].position if len(crossings) == limit else upto
        urls: dict[uuid.UUID, str | None] = {}
        for c in crossings:
            if c.user_id not in urls:
                cur.execute(WEBHOOK_URL, (c.user_id,))
                found = cur.fetchone()
                urls[c.user_id] = None if found is None else found[0]
        messages = []
        rows = []
        for c in crossings:
            url = urls[c.user_id]
            message = None
            if url is not None:
                message = uuid.uuid5(webhook_events.NAMESPACE, f"{c.id}/{EVENT_TYPE}")
                body = webhook_events.body(EVENT_TYPE, c.at, c.data())
                messages.append((message, c.id, c.user_id, EVENT_TYPE, c.source, url, c.at, c.at, body))
            rows.append((c.id, c.user_id, c.source, c.below, c.balance, c.position, c.at, message))
        if rows:
            cur.executemany(
                "INSERT INTO balance_alerts (id, user_id, source, below, balance, position, event_at, "
                "webhook_message_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                rows,
            )
        if messages:
            # A message with its body: the sender signs and sends it as it is (no job to render).
            cur.executemany(
                "INSERT INTO webhook_messages (id, job_id, user_id, event_type, event_key, url, event_at, "
                "requested_at, position, body, next_attempt_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, %s, now()) ON CONFLICT (id) DO NOTHING",
                messages,
            )
            cur.execute("SELECT pg_notify(%s, '')", (webhook_store.CHANNEL,))
        cur.execute(
            "UPDATE projection_tracking SET position = %s, updated_at = now() WHERE name = %s",
            (reached, NAME),
        )
    return crossings


def _mail_text(row: dict[str, Any]) -> str:
    return (
        f"Your {row['source']} balance is {row['balance']}, below the alert threshold of "
        f"{row['below']} you set.\n\nGET /api/v1/points shows your balances and "
        "GET /api/v1/points/statement their history; PUT /api/v1/points/alerts changes or "
        "clears the alert.\n"
    )


def mail_pending(conn: psycopg.Connection[Any], mailer: Mailer, *, limit: int = 50) -> int:
    """Mails the alerts not mailed yet (each row locked while it is mailed: several processes
    skip each other's); returns how many were delivered."""
    delivered = 0
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT a.id, a.source, a.below, a.balance, u.email FROM balance_alerts a "
            "JOIN users u ON u.id = a.user_id AND u.deleted_at IS NULL "
            "WHERE a.mailed_at IS NULL AND a.mail_attempts < %s "
            "ORDER BY a.position LIMIT %s FOR UPDATE OF a SKIP LOCKED",
            (MAIL_ATTEMPTS, limit),
        )
        for row in cur.fetchall():
            mail = Mail(
                to=row["email"],
                subject=f"Balance low: {row['source']} is {row['balance']}",
                text=_mail_text(row),
                link="",
            )
            ok = asyncio.run(mailer.deliver(mail))
            delivered += ok
            cur.execute(
                "UPDATE balance_alerts SET mail_attempts = mail_attempts + 1, "
                "mailed_at = CASE WHEN %s THEN now() END WHERE id = %s",
                (ok, row["id"]),
            )
    return delivered


class BalanceAlerts(BackgroundLoop):
    """``follow`` and ``mail_pending`` every ``interval`` seconds, in a thread of its own."""

    def __init__(
        self, url: str, mailer: Mailer, *, interval: float, behind: tuple[str, ...] = ("points",)
    ) -> None:
        super().__init__("balance-alerts")
        self.url = url
        self.behind = behind
        self.mailer = mailer
        self.interval = interval
        self.created = 0
        self.errors = 0
        self._db = ReopeningConnection(url)

    def catch_up(self) -> int:
        """Follow up to the points projection's position and mail; returns the crossings."""
        conn = self._db.get()
        found = 0
        while batch := follow(conn, behind=self.behind):
            found += len(batch)
            if len(batch) < BATCH:
                break
        self.created += found
        mail_pending(conn, self.mailer)
        return found

    def run(self) -> None:
        while not self.stopping:
            try:
                self.catch_up()
            except Exception:  # the database above all: logged, retried with a new connection
                self.errors += 1
                log.exception("balance alerts: pass failed; retrying")
                self._db.close()
            self.stop_event.wait(self.interval)
        self._db.close()
