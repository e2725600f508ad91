"""The sweeper: every few seconds, fail and refund the reservations that got no result within
the job timeout. Its candidates are the users with jobs still open at the cutoff in the
``vto_job`` read model (no replay of the event store); each user's account then decides what
is really stale (``LedgerApplication.expire_stale_reservations``). Safe to run in several
processes at once: the ledger's commands are idempotent and race on the stream version.
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
from projections.jobs import users_with_open_jobs_before

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
        self.errors = 0

    def sweep(self) -> dict[UUID, list[UUID]]:
        """One pass: the job ids expired now, per user."""
        now = self.clock()
        with psycopg.connect(self.url, autocommit=True) as conn:
            users = users_with_open_jobs_before(conn, now - self.timeout)
            conn.execute(CLOSE_FINISHED)  # the queue positions' set of started jobs
        result = self.ledger.expire_stale_reservations(users, now, self.timeout)
        count = sum(len(jobs) for jobs in result.value.values())
        if count:
            self.expired += count
            log.info("sweeper: expired and refunded %d stale reservations", count)
        if self.erasure is not None:
            self.erasure.run()
        return result.value

    def run(self) -> None:
        """Sweep every ``interval`` seconds until stopped (in the calling thread)."""
        while not self.stopping:
            try:
                self.sweep()
            except Exception:
                self.errors += 1
                log.exception("sweeper: pass failed; retrying")
            self.stop_event.wait(self.interval)
