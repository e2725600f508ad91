"""A differential test of the two account stores (``ledger.store``): the same random command
sequences, driven through the library's own path (``ReferenceStore``) and through the fast
store (``infra.account_store``), give the same answers, the same stored events and the same
accounts. On the fast side a second process takes some of the commands, so that its accounts
in memory go stale and must be brought up to date, and commands of one user race."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.ledger_store import postgres_ledger
from infra.settings import Settings
from ledger.application import LedgerApplication
from ledger.errors import LedgerError
from tests.conftest import FakeClock, fresh_database

Step = tuple[str, tuple[Any, ...]]
JOB_STEPS = ("complete", "fail", "cancel", "refund")

steps = st.lists(
    st.one_of(
        st.tuples(st.just("credits"), st.tuples(st.integers(1, 12))),
        st.tuples(st.just("tickets"), st.tuples(st.sampled_from(["lookbook", "video"]), st.integers(1, 3))),
        st.tuples(st.just("subscribe"), st.tuples(st.none() | st.integers(1, 3), st.integers(1, 3))),
        st.tuples(st.just("unsubscribe"), st.just(())),
        st.tuples(
            st.just("request"),
            st.tuples(st.sampled_from(["image", "video"]), st.none() | st.sampled_from(["k1", "k2"])),
        ),
        st.tuples(st.sampled_from(JOB_STEPS), st.tuples(st.integers(0, 7))),
        st.tuples(st.just("time"), st.tuples(st.integers(1, 24 * 60))),
        st.tuples(st.just("sweep"), st.just(())),
    ),
    min_size=1,
    max_size=30,
)


class Side:
    """One ledger (and, on the fast side, a second process on its database) with its clock."""

    def __init__(self, apps: list[LedgerApplication], clock: FakeClock) -> None:
        self.apps, self.clock = apps, clock
        self.turn = 0

    def next(self) -> LedgerApplication:
        """The ledger that takes the next command (alternating between the processes)."""
        self.turn += 1
        return self.apps[self.turn % len(self.apps)]


def outcome(call: Callable[[], Any]) -> Any:
    """A command's answer, comparable across stores: its value, or the domain error's type."""
    try:
        result = call()
    except LedgerError as exc:
        return type(exc).__name__
    value = result.value
    if hasattr(value, "job_id"):  # a Reservation
        return (value.job_id, value.source, value.amount, value.created)
    return value


def run(side: Side, user: UUID, step: Step, job: UUID) -> Any:
    """One step on one side; ``job``: the job it concerns (the same on both sides)."""
    name, args = step
    app = side.next()
    if name == "credits":
        return outcome(lambda: app.grant_credits(user, args[0], "diff"))
    if name == "tickets":
        return outcome(lambda: app.grant_tickets(user, args[0], args[1], "diff"))
    if name == "subscribe":
        end = side.clock.now + timedelta(days=args[1])
        return outcome(lambda: app.activate_subscription(user, "pro", end, args[0], "diff"))
    if name == "unsubscribe":
        return outcome(lambda: app.cancel_subscription(user, "diff"))
    if name == "request":
        return outcome(lambda: app.request_job(user, job, args[0], {"kind": args[0]}, args[1]))
    if name == "time":
        side.clock.advance(minutes=args[0])
        return None
    if name == "sweep":
        return outcome(lambda: app.expire_stale_reservations([user], side.clock.now, timedelta(hours=6)))
    if name == "complete":
        return outcome(lambda: app.complete_job(user, job, [{"key": f"{job}.png"}]))
    if name == "fail":
        return outcome(lambda: app.fail_job(user, job, {"code": "x"}))
    if name == "cancel":
        return outcome(lambda: app.cancel_job(user, job))
    return outcome(lambda: app.admin_refund(user, job, "diff", by="admin"))


def stored(ledger: LedgerApplication, user: UUID) -> list[tuple[int, str, bytes]]:
    return [(e.originator_version, e.topic, e.state) for e in ledger.recorder.select_events(user)]


def shape(ledger: LedgerApplication, user: UUID) -> tuple[Any, ...]:
    a = ledger.account(user)
    return (a.version, a.credits, a.tickets, a.subscription, a.quota_day, a.quota_used, a.jobs, a.keys)


@pytest.fixture
def sides(pg_server_url: str, pg_url: str) -> Iterator[tuple[Side, Side]]:
    config = Settings(_env_file=None)  # type: ignore[call-arg]
    with fresh_database(pg_server_url) as fast_url:
        reference_clock, fast_clock = FakeClock(), FakeClock()
        reference = postgres_ledger(config, pg_url, reference_clock, reference=True)
        fast = [postgres_ledger(config, fast_url, fast_clock) for _ in range(2)]
        try:
            yield Side([reference], reference_clock), Side(fast, fast_clock)
        finally:
            for app in (reference, *fast):
                app.close()


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(history=steps)
def test_the_fast_store_decides_as_the_library_does(sides: tuple[Side, Side], history: list[Step]) -> None:
    reference, fast = sides
    user, jobs = uuid4(), [uuid4() for _ in range(8)]
    for side in sides:
        side.apps[0].open_account(user)
    requests = 0
    for step in history:
        name, args = step
        if name == "request":  # one of the eight jobs (again: a repeat or a conflict), or a new one
            job = jobs[requests % 8] if args[1] is None else uuid4()
            requests += 1
        else:
            job = jobs[args[0]] if name in JOB_STEPS else jobs[0]
        answers = [run(side, user, step, job) for side in sides]
        assert answers[0] == answers[1], step
    assert stored(reference.apps[0], user) == stored(fast.apps[0], user)
    assert shape(reference.apps[0], user) == shape(fast.apps[0], user) == shape(fast.apps[1], user)
