"""The sweeper: every few seconds, fail and refund the reservations that got no result within
the job timeout, and record the expiry of the lots whose expiry has come (``PointsExpired``,
dated at the expiry: the same history as when the account's next command records it). Its
candidates are the users with jobs still open at the cutoff in the ``vto_job`` read model, and
the users holding lots due in ``point_lot`` (no replay of the event store); each user's account
then decides what is really stale or due (``LedgerApplication.expire_stale_reservations``,
``expire_lots``). Safe to run in several processes at once: the ledger's commands are
idempotent and race on the stream version.
Each pass also cancels and refunds (refund cause ``deadline``) the jobs still open past the
deadline their order set (``vto_job.deadline_at``; ``LedgerApplication.cancel_past_deadline``):
queued or running alike, once, since the account cancels only a job still open.
With an ``erasure`` (``infra.erasure``), each pass also erases the stored objects that are due."""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

import psycopg

from infra.erasure import Erasure
from infra.threads import BackgroundLoop
from ledger.application import Clock, LedgerApplication, utc_now
from pipeline.progress import CLOSE_FINISHED
from projections.jobs import jobs_past_deadline, users_with_open_jobs_before
from projections.points import users_with_due_lots

log = logging.getLogger(__name__)


class Sweeper(BackgroundLoop):
    def __init__(
        self,
        url: str,
        ledger: LedgerApplication,
        timeout: timedelta,
        interval: float,
        clock: Clock = utc_now,
        erasure: Erasure | None = None,
    ) -> None:
        super().__init__("sweeper")
        self.url = url
        self.ledger = ledger
        self.timeout = timeout
        self.interval = interval
        self.clock = clock
        self.erasure = erasure
        self.expired = 0
        self.past_deadline = 0  # jobs canceled at their deadline
        self.lots_expired = 0
        self.errors = 0

    def sweep(self) -> dict[UUID, list[UUID]]:
        """One pass: the job ids expired now, per user."""
        now = self.clock()
        with psycopg.connect(self.url, autocommit=True) as conn:
            users = users_with_open_jobs_before(conn, now - self.timeout)
            late = jobs_past_deadline(conn, now)
            holders = users_with_due_lots(conn, now)
            conn.execute(CLOSE_FINISHED)  # the queue positions' set of started jobs
        self.cancel_past_deadline(late)
        result = self.ledger.expire_stale_reservations(users, now, self.timeout)
        count = sum(len(jobs) for jobs in result.value.values())
        if count:
            self.expired += count
            log.info("sweeper: expired and refunded %d stale reservations", count)
        self.expire_lots(holders)
        if self.erasure is not None:
            self.erasure.run()
        return result.value

    def cancel_past_deadline(self, jobs: list[tuple[UUID, UUID]]) -> list[UUID]:
        """Cancel and refund the jobs (user id, job id) whose deadline passed; the ones canceled
        now (a job that finished meanwhile, or was canceled by an earlier pass, is left alone)."""
        if not jobs:
            return []
        canceled = self.ledger.cancel_past_deadline(jobs).value
        if canceled:
            self.past_deadline += len(canceled)
            log.info("sweeper: canceled and refunded %d jobs past their deadline", len(canceled))
        return canceled

    def expire_lots(self, users: list[UUID]) -> dict[UUID, int]:
        """Record the lots' expiries of ``users`` (each account decides which are due, at its
        own clock); the number of lots expired per user."""
        if not users:
            return {}
        expired = self.ledger.expire_lots(users).value
        count = sum(expired.values())
        if count:
            self.lots_expired += count
            log.info("sweeper: recorded the expiry of %d lots", count)
        return expired

    def run(self) -> None:
        """Sweep every ``interval`` seconds until stopped (in the calling thread)."""
        while not self.stopping:
            try:
                self.sweep()
            except Exception:
                self.errors += 1
                log.exception("sweeper: pass failed; retrying")
            self.stop_event.wait(self.interval)
