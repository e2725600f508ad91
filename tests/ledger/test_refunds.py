"""A job's charge is given back at most once, however its refunds meet: an administrator's
refund twice, or before the job fails, is canceled, or expires. Expected balances are written
by hand."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from uuid import UUID, uuid4

import pytest

from ledger.account import Account
from ledger.application import LedgerApplication
from ledger.errors import JobAlreadyRefunded
from tests.conftest import FakeClock
from tests.factories import job_request, ledger_events, new_user


def refunds(ledger: LedgerApplication, user: UUID) -> list[Account.Refunded]:
    return [e for e in ledger_events(ledger, user) if isinstance(e, Account.Refunded)]


def ordered(ledger: LedgerApplication) -> tuple[UUID, UUID]:
    """A user with 10 credits who ordered an image job (1 credit): 9 left."""
    user = new_user(ledger, credits=10)
    job = uuid4()
    ledger.request_job(user, job, "image", job_request())
    assert ledger.account(user).credits == 9
    return user, job


def test_an_admin_refund_twice_is_refused_the_second_time(ledger: LedgerApplication) -> None:
    user, job = ordered(ledger)
    ledger.admin_refund(user, job, "goodwill", by="admin-1")
    with pytest.raises(JobAlreadyRefunded):
        ledger.admin_refund(user, job, "again", by="admin-1")
    assert len(refunds(ledger, user)) == 1
    assert ledger.account(user).credits == 10


@pytest.mark.parametrize(
    "end",
    [
        lambda ledger, user, job, clock: ledger.fail_job(user, job, {"code": "boom"}),
        lambda ledger, user, job, clock: ledger.cancel_job(user, job),
        lambda ledger, user, job, clock: ledger.expire_stale_reservations(
            [user], clock.now + timedelta(hours=2), timedelta(hours=1)
        ),
    ],
    ids=["failed", "canceled", "expired"],
)
def test_a_job_refunded_by_an_admin_then_ended_is_not_refunded_again(
    ledger: LedgerApplication, clock: FakeClock, end: Callable[..., object]
) -> None:
    user, job = ordered(ledger)
    ledger.admin_refund(user, job, "goodwill", by="admin-1")
    end(ledger, user, job, clock)
    record = ledger.account(user).job(job)
    assert record is not None and record["status"] != "reserved"  # the job did end
    assert len(refunds(ledger, user)) == 1
    assert ledger.account(user).credits == 10


def test_a_failed_job_refunded_by_an_admin_is_refused(ledger: LedgerApplication) -> None:
    user, job = ordered(ledger)
    ledger.fail_job(user, job, {"code": "boom"})
    ledger.fail_job(user, job, {"code": "boom"})  # a duplicate result: nothing more
    with pytest.raises(JobAlreadyRefunded):
        ledger.admin_refund(user, job, "goodwill", by="admin-1")
    assert [r.cause for r in refunds(ledger, user)] == ["failed"]
    assert ledger.account(user).credits == 10
