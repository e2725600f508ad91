"""Job status names, defined once.

``JobStatus`` is what the product shows (API responses, the ``vto_job`` read model, pipeline
messages). ``ReservationStatus`` is what a user's ``Account`` holds for a job's reservation;
each maps to the status the product shows through ``job_status``.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """A job as users see it."""

    QUEUED = "queued"  # reserved and waiting for a worker
    RUNNING = "running"  # a worker reported progress
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # refunded
    CANCELED = "canceled"  # refunded

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class ReservationStatus(StrEnum):
    """A job's reservation in the ledger."""

    RESERVED = "reserved"  # open: waiting for its result
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"  # failed by the sweeper; a late success is still delivered, free

    @property
    def open(self) -> bool:
        return self is ReservationStatus.RESERVED

    @property
    def job_status(self) -> JobStatus:
        return _SHOWN_AS[self]


_SHOWN_AS = {
    ReservationStatus.RESERVED: JobStatus.QUEUED,
    ReservationStatus.SUCCEEDED: JobStatus.SUCCEEDED,
    ReservationStatus.FAILED: JobStatus.FAILED,
    ReservationStatus.CANCELED: JobStatus.CANCELED,
    ReservationStatus.EXPIRED: JobStatus.FAILED,
}


class RefundCause(StrEnum):
    """Why a reservation was given back (``Account.Refunded.cause``)."""

    FAILED = "failed"  # the job failed
    CANCELED = "canceled"  # the user canceled it
    EXPIRED = "expired"  # the sweeper failed it: no result within the job timeout
    ADMIN = "admin"  # an administrator's refund
    DEADLINE = "deadline"  # not finished by the deadline its order set (``deadline_s``)
