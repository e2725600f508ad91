"""Concurrency on real PostgreSQL: racing commands never charge twice or lose a refund.

Each test races threads spread over three ledger application instances on one database, as
three API processes would: within an instance commands on one user are serialised, between
instances they collide on the stream version and retry."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest

from infra.ledger_store import postgres_ledger
from infra.settings import Settings
from ledger.account import Account
from ledger.application import LedgerApplication
from ledger.errors import InsufficientEntitlement
from tests.factories import job_request, ledger_events, new_user
from tests.ledger.invariants import check_account_invariants

T = TypeVar("T")


def race(calls: list[Callable[[], T]]) -> list[T | BaseException]:
    """Run every call on its own thread, all released at once by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T | BaseException:
        barrier.wait(timeout=60)
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - collected, and asserted on by the caller
            return exc

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def assert_stream_intact(ledger: LedgerApplication, user: UUID) -> list[Any]:
    events = ledger_events(ledger, user)
    assert [e.originator_version for e in events] == list(range(1, len(events) + 1))
    check_account_invariants(events, ledger.account(user))
    return events


@pytest.fixture
def apps(pg_url: str, settings: Settings) -> Iterator[list[LedgerApplication]]:
    instances = [postgres_ledger(settings, pg_url) for _ in range(3)]
    yield instances
    for app in instances:
        app.close()


def kinds(results: list[Any]) -> Counter[str]:
    return Counter(type(r).__name__ for r in results)


def test_fifty_threads_one_user_credits_for_ten(apps: list[LedgerApplication]) -> None:
    pg_ledger = apps[0]
    cost = pg_ledger.policy.cost("image")
    user = new_user(pg_ledger, credits=10 * cost)
    results = race(
        [lambda i=i: apps[i % 3].request_job(user, uuid4(), "image", job_request()) for i in range(50)]
    )
    assert kinds(results) == {"CommandResult": 10, "InsufficientEntitlement": 40}, kinds(results)
    assert pg_ledger.account(user).credits == 0
    events = assert_stream_intact(pg_ledger, user)
    assert sum(isinstance(e, Account.EntitlementReserved) for e in events) == 10
    assert sum(isinstance(e, Account.JobRequested) for e in events) == 10
    positions = [r.position for r in results if not isinstance(r, BaseException)]
    assert len(set(positions)) == 10 and all(p is not None for p in positions)
    assert sum(app.stats.exhausted for app in apps) == 0  # whatever collided was decided again
    for app in apps:  # every instance (and its cache) agrees with the store
        assert app.account(user).credits == 0


def test_many_users_at_once(apps: list[LedgerApplication]) -> None:
    pg_ledger = apps[0]
    users = [new_user(pg_ledger, lookbook=3) for _ in range(10)]
    calls = [
        (lambda u=u, i=i: apps[i % 3].request_job(u, uuid4(), "image", job_request()))
        for u in users
        for i in range(6)
    ]
    results = race(calls)
    assert kinds(results) == {"CommandResult": 30, "InsufficientEntitlement": 30}
    for user in users:
        assert pg_ledger.account(user).tickets == {"lookbook": 0}
        events = assert_stream_intact(pg_ledger, user)
        assert sum(isinstance(e, Account.EntitlementReserved) for e in events) == 3


def test_same_idempotency_key_raced_charges_once(apps: list[LedgerApplication]) -> None:
    pg_ledger = apps[0]
    user = new_user(pg_ledger, credits=100)
    body = job_request()
    results = race(
        [lambda i=i: apps[i % 3].request_job(user, uuid4(), "image", body, "key") for i in range(20)]
    )
    job_ids = {r.value.job_id for r in results if not isinstance(r, BaseException)}
    assert len(job_ids) == 1 and kinds(results) == {"CommandResult": 20}
    assert pg_ledger.account(user).credits == 100 - pg_ledger.policy.cost("image")


def test_duplicate_concurrent_completions_and_failures_have_one_effect(apps: list[LedgerApplication]) -> None:
    pg_ledger = apps[0]
    user = new_user(pg_ledger, credits=10)
    job = uuid4()
    pg_ledger.request_job(user, job, "image", job_request())
    calls: list[Callable[[], Any]] = []
    for i in range(24):
        app = apps[(i // 3) % 3]
        if i % 3 == 0:
            calls.append(lambda app=app: app.complete_job(user, job, [{"key": "out.png"}]))
        elif i % 3 == 1:
            calls.append(lambda app=app: app.fail_job(user, job, {"code": "boom"}))
        else:
            calls.append(lambda app=app: app.cancel_job(user, job))
    results = race(calls)
    assert all(not isinstance(r, BaseException) for r in results), results
    assert sum(r.value for r in results) == 1  # exactly one call had an effect
    events = assert_stream_intact(pg_ledger, user)
    terminal = [
        e for e in events if isinstance(e, Account.JobCompleted | Account.JobFailed | Account.JobCanceled)
    ]
    refunds = [e for e in events if isinstance(e, Account.Refunded)]
    assert len(terminal) == 1
    assert len(refunds) == (0 if isinstance(terminal[0], Account.JobCompleted) else 1)
    for app in apps:
        assert app.account(user).credits == (9 if not refunds else 10)


def test_rejected_requests_race_with_a_refund_without_losing_it(apps: list[LedgerApplication]) -> None:
    pg_ledger = apps[0]
    user = new_user(pg_ledger, credits=1)
    job = uuid4()
    pg_ledger.request_job(user, job, "image", job_request())
    calls: list[Callable[[], Any]] = [lambda: apps[1].fail_job(user, job, {"code": "x"})]
    calls += [lambda i=i: apps[i % 3].request_job(user, uuid4(), "image", job_request()) for i in range(15)]
    results = race(calls)
    won = [r for r in results[1:] if not isinstance(r, InsufficientEntitlement)]
    assert len(won) <= 1  # the refunded credit pays for at most one new job
    for app in apps:
        assert app.account(user).credits == 1 - len(won)
    assert_stream_intact(pg_ledger, user)
