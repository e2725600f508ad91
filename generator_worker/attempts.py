"""The worker's attempts at each job, in PostgreSQL (table ``job_attempts``, migration 0011).

Before each attempt the worker increments the job's count (an upsert, committed before any
work): a worker that crashes or is killed mid-job has still used that attempt, so a job that
kills its worker every time fails after ``VTO_WORKER_MAX_ATTEMPTS`` deliveries instead of
crash-looping the group. The outcome the worker reaches (its result message, and its
dead-letter message if any) is stored before it is published: a request delivered again
(publish or commit failed, broker restart, rebalance) republishes that outcome instead of
generating again. A clean stop mid-job gives its attempt back (``release``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

BEGIN = (
    "INSERT INTO job_attempts (job_id, attempts) VALUES (%s, 1) "
    "ON CONFLICT (job_id) DO UPDATE SET attempts = job_attempts.attempts + 1, updated_at = now() "
    "RETURNING attempts, last_error"
)
RELEASE = (
    "UPDATE job_attempts SET attempts = greatest(attempts - 1, 0), updated_at = now() "
    "WHERE job_id = %s AND result IS NULL"
)
RECORD_ERROR = "UPDATE job_attempts SET last_error = %s, updated_at = now() WHERE job_id = %s"
FINISH = (
    "INSERT INTO job_attempts (job_id, result, dead_letter) VALUES (%s, %s, %s) "
    "ON CONFLICT (job_id) DO UPDATE SET result = excluded.result, dead_letter = excluded.dead_letter, "
    "updated_at = now()"
)
OUTCOME = "SELECT result, dead_letter FROM job_attempts WHERE job_id = %s AND result IS NOT NULL"


@dataclass(frozen=True)
class Attempt:
    number: int  # 1 for the first attempt, counting every earlier delivery
    last_error: dict[str, Any] | None  # of the previous attempt, when it ended with an error


@dataclass(frozen=True)
class Outcome:
    result: dict[str, Any]  # the JobResult message
    dead_letter: dict[str, Any] | None  # the DeadLetter message sent with it


class JobAttempts:
    """One connection (autocommit), opened on first use and again after a failure; a
    database error propagates (the consume loop rewinds the request and backs off)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def begin(self, job_id: UUID) -> Attempt:
        row = self._execute(BEGIN, (job_id,), fetch=True)
        assert row is not None
        return Attempt(int(row[0]), row[1])

    def record_error(self, job_id: UUID, error: dict[str, Any]) -> None:
        self._execute(RECORD_ERROR, (Jsonb(error), job_id))

    def release(self, job_id: UUID) -> None:
        self._execute(RELEASE, (job_id,))

    def finish(self, job_id: UUID, result: dict[str, Any], dead_letter: dict[str, Any] | None) -> None:
        self._execute(FINISH, (job_id, Jsonb(result), None if dead_letter is None else Jsonb(dead_letter)))

    def outcome(self, job_id: UUID) -> Outcome | None:
        row = self._execute(OUTCOME, (job_id,), fetch=True)
        return None if row is None else Outcome(row[0], row[1])

    def _execute(self, sql: str, params: tuple[Any, ...], *, fetch: bool = False) -> Any:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.url, autocommit=True)
                cursor = self._conn.execute(sql, params)
                return cursor.fetchone() if fetch else None
            except psycopg.OperationalError:
                self._close()
                raise

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close()
