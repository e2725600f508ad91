"""Idempotency: job ids, client keys, duplicate results, refunds at most once, bounded state."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

from ledger.account import CLOSED_JOB_RETENTION, Account
from ledger.application import LedgerApplication
from ledger.errors import IdempotencyKeyReused, JobAlreadyRefunded, JobIdConflict, JobNotFound
from tests.conftest import FakeClock
from tests.factories import job_request, ledger_events, new_user


def count(ledger: LedgerApplication, user: object, event_class: type) -> int:
    return sum(isinstance(e, event_class) for e in ledger_events(ledger, user))  # type: ignore[arg-type]


def test_same_key_same_request_returns_the_same_job_and_charges_once(ledger: LedgerApplication) -> None:
    user = new_user(ledger, credits=10)
    body = job_request()
    first = ledger.request_job(user, uuid4(), "image", body, idempotency_key="k1")
    again = ledger.request_job(user, uuid4(), "image", body, idempotency_key="k1")
    assert first.value.created and not again.value.created
    assert again.value.job_id == first.value.job_id
    assert again.position is None
    assert ledger.account(user).credits == 9
    assert count(ledger, user, Account.EntitlementReserved) == 1


def test_same_key_different_request_is_a_distinct_error(ledger: LedgerApplication) -> None:
    user = new_user(ledger, credits=10)
    ledger.request_job(user, uuid4(), "image", job_request(), idempotency_key="k1")
    with pytest.raises(IdempotencyKeyReused) as info:
        ledger.request_job(user, uuid4(), "image", job_request(), idempotency_key="k1")
    assert info.value.code == "idempotency_key_reused"
    assert ledger.account(user).credits == 9


def test_keys_are_per_user(ledger: LedgerApplication) -> None:
    alice, bob = new_user(ledger, credits=5), new_user(ledger, credits=5)
    body = job_request()
    a = ledger.request_job(alice, uuid4(), "image", body, idempotency_key="same").value
    b = ledger.request_job(bob, uuid4(), "image", body, idempotency_key="same").value
    assert a.job_id != b.job_id and a.created and b.created


def test_keys_are_forgotten_after_their_ttl(ledger: LedgerApplication, clock: FakeClock) -> None:
    user = new_user(ledger, credits=10)
    body = job_request()
    first = ledger.request_job(user, uuid4(), "image", body, idempotency_key="k").value
    clock.advance(hours=24, seconds=1)
    later = ledger.request_job(user, uuid4(), "image", body, idempotency_key="k").value
    assert later.created and later.job_id != first.job_id
    assert list(ledger.account(user).keys) == ["k"]


def test_a_job_id_is_reserved_at_most_once(ledger: LedgerApplication) -> None:
    user = new_user(ledger, credits=10)
    job, body = uuid4(), job_request()
    ledger.request_job(user, job, "image", body)
    assert ledger.request_job(user, job, "image", body).value.created is False
    with pytest.raises(JobIdConflict):
        ledger.request_job(user, job, "image", job_request())
    assert ledger.account(user).credits == 9


def test_duplicate_results_are_no_ops(ledger: LedgerApplication) -> None:
    user = new_user(ledger, credits=10)
    job = uuid4()
    ledger.request_job(user, job, "image", job_request())
    assert ledger.complete_job(user, job, [{"key": "a.png"}]).value is True
    assert ledger.complete_job(user, job, [{"key": "a.png"}]).value is False
    assert ledger.fail_job(user, job, {"code": "late"}).value is False
    assert ledger.cancel_job(user, job).value is False
    assert count(ledger, user, Account.JobCompleted) == 1
    assert count(ledger, user, Account.Refunded) == 0
    assert ledger.account(user).credits == 9


def test_failure_and_cancel_refund_exactly_once(ledger: LedgerApplication) -> None:
    user = new_user(ledger, credits=10)
    failed, canceled = uuid4(), uuid4()
    ledger.request_job(user, failed, "image", job_request())
    ledger.request_job(user, canceled, "image", job_request())
    for _ in range(3):
        ledger.fail_job(user, failed, {"code": "x"})
        ledger.cancel_job(user, canceled)
        ledger.complete_job(user, canceled, [])
    assert count(ledger, user, Account.Refunded) == 2
    assert ledger.account(user).credits == 10


def test_admin_refund_once_then_conflict(ledger: LedgerApplication) -> None:
    user = new_user(ledger, credits=10)
    job = uuid4()
    ledger.request_job(user, job, "image", job_request())
    ledger.complete_job(user, job, [])
    ledger.admin_refund(user, job, "customer complaint", by="admin@example.com")
    with pytest.raises(JobAlreadyRefunded):
        ledger.admin_refund(user, job, "again", by="admin@example.com")
    assert ledger.account(user).credits == 10
    with pytest.raises(JobNotFound):
        ledger.admin_refund(user, uuid4(), "no such job")


def test_admin_refund_of_a_failed_job_is_a_conflict(ledger: LedgerApplication) -> None:
    user = new_user(ledger, credits=10)
    job = uuid4()
    ledger.request_job(user, job, "image", job_request())
    ledger.fail_job(user, job, {"code": "x"})
    with pytest.raises(JobAlreadyRefunded):
        ledger.admin_refund(user, job, "double dip")
    assert ledger.account(user).credits == 10


def test_stale_reservations_are_expired_and_a_late_success_is_free(
    ledger: LedgerApplication, clock: FakeClock
) -> None:
    user = new_user(ledger, credits=10)
    stale, fresh = uuid4(), uuid4()
    ledger.request_job(user, stale, "image", job_request())
    clock.advance(minutes=20)
    ledger.request_job(user, fresh, "image", job_request())
    result = ledger.expire_stale_reservations([user], clock.now, timedelta(minutes=15))
    assert result.value == {user: [stale]}
    assert ledger.account(user).credits == 9
    # Sweeping again changes nothing.
    assert ledger.expire_stale_reservations([user], clock.now, timedelta(minutes=15)).value == {}
    # The late success is delivered, not charged.
    assert ledger.complete_job(user, stale, [{"key": "late.png"}]).value is True
    completed = [e for e in ledger_events(ledger, user) if isinstance(e, Account.JobCompleted)]
    assert [(e.job_id, e.charged) for e in completed] == [(stale, False)]
    assert ledger.account(user).credits == 9
    assert ledger.account(user).job(stale)["status"] == "succeeded"  # type: ignore[index]


def test_finished_jobs_are_forgotten_after_retention(ledger: LedgerApplication, clock: FakeClock) -> None:
    user = new_user(ledger, credits=10)
    job = uuid4()
    ledger.request_job(user, job, "image", job_request(), idempotency_key="k")
    ledger.complete_job(user, job, [])
    clock.advance(seconds=CLOSED_JOB_RETENTION.total_seconds() + 1)
    ledger.grant_credits(user, 1, "any later event prunes")
    account = ledger.account(user)
    assert account.jobs == {} and account.closed == {} and account.keys == {}
    with pytest.raises(JobNotFound):
        ledger.admin_refund(user, job, "too late")
