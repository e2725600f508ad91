"""Erasure of stored objects: the API schedules, the sweeper erases (``Erasure.run`` on each of
its passes). Here, below both, so that they share one definition.

Two kinds of object leave the storage here:

- the objects of deleted assets and products (also those of deleted projects and collections):
  the API deletes the rows at once and schedules their keys (``schedule``) to be erased after
  ``erasure_delay``: the job timeout plus the worker's margin, by which every job ordered
  before the deletion has ended, generated with them or failed by the sweeper and refunded;
- a deleted account's objects, ``VTO_DELETED_ACCOUNT_RETENTION_DAYS`` after its deletion: its
  assets, the products of the projects it owns and its job outputs (``outputs/<user id>/``).
  Its catalog rows go with them (collections, projects with their shares, invitations and
  products, assets), and a row of ``erased_accounts`` records that it is done. Accounts are
  looked for at most every ``account_scan_interval_s`` (a retention is counted in days).

What others hold stays: an editor's outputs (stored under the editor's id), other owners'
projects. The read models (``vto_job``, ``gallery``) keep their rows, as a replay of the ledger
would rebuild them; a link to an erased object answers 404.

Each step takes its rows ``FOR UPDATE SKIP LOCKED`` and deletes the objects, then the rows, in
one transaction: several sweepers may run at once, and when the object store fails the rows
stay for the next pass (deleting an object twice is harmless)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from infra.settings import WORKER_JOB_MARGIN_S, Settings
from infra.storage import Storage

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

_SCHEDULE = text(
    "INSERT INTO storage_erasures (key, erase_after, reason) VALUES (:key, :erase_after, :reason) "
    "ON CONFLICT (key) DO NOTHING"
)
_DUE = (
    "SELECT key FROM storage_erasures WHERE erase_after <= %s ORDER BY erase_after LIMIT %s "
    "FOR UPDATE SKIP LOCKED"
)
_NEXT_ACCOUNT = (
    "SELECT u.id FROM users u WHERE u.deleted_at IS NOT NULL AND u.deleted_at < %s "
    "AND NOT EXISTS (SELECT 1 FROM erased_accounts e WHERE e.user_id = u.id) "
    "ORDER BY u.deleted_at LIMIT 1 FOR UPDATE OF u SKIP LOCKED"
)
_OWNED = "SELECT id FROM projects WHERE owner_id = %(user)s"
# An account's objects; its projects are locked first, so that no product is added meanwhile.
_ACCOUNT_KEYS = (
    "SELECT storage_key FROM assets WHERE owner_id = %(user)s "  # noqa: S608 (constant fragments)
    f"UNION ALL SELECT storage_key FROM products WHERE project_id IN ({_OWNED})"
)
_ACCOUNT_ROWS = (
    f"DELETE FROM project_invitations WHERE project_id IN ({_OWNED})",  # noqa: S608 (constant)
    f"DELETE FROM project_shares WHERE user_id = %(user)s OR project_id IN ({_OWNED})",  # noqa: S608
    f"DELETE FROM products WHERE project_id IN ({_OWNED})",  # noqa: S608
    "DELETE FROM projects WHERE owner_id = %(user)s",
    "DELETE FROM collections WHERE owner_id = %(user)s",
    "DELETE FROM assets WHERE owner_id = %(user)s",
    "INSERT INTO erased_accounts (user_id, erased_at, objects) VALUES (%(user)s, %(now)s, %(objects)s)",
)
ACCOUNT_SCAN_INTERVAL_S = 600.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def erasure_delay(settings: Settings) -> timedelta:
    """How long a deleted row's object stays: until every job ordered before the deletion has
    ended (the sweeper fails a job at ``job_timeout_s``; a worker reads its inputs before)."""
    return timedelta(seconds=settings.job_timeout_s + WORKER_JOB_MARGIN_S)


def schedule(
    db: Session | Connection, keys: Iterable[str], reason: str, delay: timedelta, now: datetime | None = None
) -> int:
    """Schedules the objects of ``keys`` for erasure ``delay`` from now, in the caller's
    transaction (they are erased only if it commits). Returns how many."""
    erase_after = (now or utc_now()) + delay
    rows = [{"key": key, "erase_after": erase_after, "reason": reason} for key in keys]
    if rows:
        db.execute(_SCHEDULE, rows)
    return len(rows)


@dataclass
class ErasureReport:
    objects: int = 0  # scheduled objects erased
    accounts: int = 0  # deleted accounts erased


class Erasure:
    """One pass erases at most ``batch`` scheduled objects and ``accounts_per_pass`` deleted
    accounts (what is left waits for the next pass); it looks for deleted accounts at most
    every ``account_scan_interval_s`` (their query reads every deleted account)."""

    def __init__(
        self,
        url: str,
        storage: Storage,
        settings: Settings,
        *,
        clock: Clock = utc_now,
        batch: int = 500,
        accounts_per_pass: int = 10,
        account_scan_interval_s: float = ACCOUNT_SCAN_INTERVAL_S,
    ) -> None:
        self.url = url
        self.storage = storage
        self.retention = timedelta(days=settings.deleted_account_retention_days)
        self.clock = clock
        self.batch = batch
        self.accounts_per_pass = accounts_per_pass
        self.account_scan_interval_s = account_scan_interval_s
        self._accounts_scanned: float | None = None  # time.monotonic() of the last look

    def run(self) -> ErasureReport:
        now = self.clock()
        report = ErasureReport(objects=self.erase_due_objects(now))
        scanned = self._accounts_scanned
        if scanned is None or time.monotonic() - scanned >= self.account_scan_interval_s:
            self._accounts_scanned = time.monotonic()
            for _ in range(self.accounts_per_pass):
                if not self.erase_next_account(now):
                    break
                report.accounts += 1
        if report.objects or report.accounts:
            log.info("erasure: %d scheduled objects, %d deleted accounts", report.objects, report.accounts)
        return report

    def erase_due_objects(self, now: datetime) -> int:
        with psycopg.connect(self.url) as conn:
            keys = [str(key) for (key,) in conn.execute(_DUE, (now, self.batch))]
            for key in keys:
                self._delete(key)
            conn.execute("DELETE FROM storage_erasures WHERE key = ANY(%s)", (keys,))
        return len(keys)

    def erase_next_account(self, now: datetime) -> UUID | None:
        """Erases the deleted account longest past its retention, if any; its id."""
        with psycopg.connect(self.url) as conn:
            row = conn.execute(_NEXT_ACCOUNT, (now - self.retention,)).fetchone()
            if row is None:
                return None
            user: Any = row[0]
            params: dict[str, Any] = {"user": user, "now": now}
            conn.execute(_OWNED + " FOR UPDATE", params)
            keys = [str(key) for (key,) in conn.execute(_ACCOUNT_KEYS, params)]
            for key in keys:
                self._delete(key)
            outputs = self.storage.delete_prefix(f"outputs/{user}")
            params["objects"] = len(keys) + outputs
            for statement in _ACCOUNT_ROWS:
                conn.execute(statement, params)
        log.info("erasure: account %s: %d uploads and %d outputs erased", user, len(keys), outputs)
        return UUID(str(user))

    def _delete(self, key: str) -> None:
        try:
            self.storage.delete(key)
        except ValueError:  # not a key the storage can hold (check_key): nothing stored under it
            log.warning("erasure: skipping invalid storage key %r", key)
