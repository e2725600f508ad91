"""A stateful property test: random sequences of ledger commands keep every invariant."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ledger.account import Account
from ledger.application import LedgerApplication
from ledger.errors import (
    IdempotencyKeyReused,
    InsufficientEntitlement,
    InvalidAmount,
    JobAlreadyRefunded,
)
from tests.conftest import FakeClock
from tests.ledger.invariants import check_account_invariants

KINDS = st.sampled_from(["image", "video"])
BODIES = st.sampled_from([{"p": 1}, {"p": 2}, {"p": 3}])
KEYS = st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"]))
EXPIRIES = st.one_of(st.none(), st.integers(1, 60 * 40))  # minutes from now
CATEGORIES = st.sampled_from(["paid", "promotional"])


def make_machine(ledger: LedgerApplication, clock: FakeClock) -> type[RuleBasedStateMachine]:
    class LedgerMachine(RuleBasedStateMachine):
        jobs = Bundle("jobs")

        def __init__(self) -> None:
            super().__init__()
            self.user = uuid4()
            ledger.open_account(self.user)
            self.last: Any = None
            self.keys: dict[str, tuple[UUID, str, dict[str, int], datetime]] = {}

        def _do(self, command: Any) -> Any:
            self.last = command
            return command()

        @rule(amount=st.integers(1, 8), expires=EXPIRIES, category=CATEGORIES)
        def grant_credits(self, amount: int, expires: int | None, category: str) -> None:
            at = None if expires is None else clock.now + timedelta(minutes=expires)
            self._do(lambda: ledger.grant_credits(self.user, amount, "prop", at, category))

        @rule(
            ticket=st.sampled_from(["lookbook", "video"]),
            count=st.integers(1, 3),
            expires=EXPIRIES,
            category=CATEGORIES,
        )
        def grant_tickets(self, ticket: str, count: int, expires: int | None, category: str) -> None:
            at = None if expires is None else clock.now + timedelta(minutes=expires)
            self._do(lambda: ledger.grant_tickets(self.user, ticket, count, "prop", at, category))

        @rule()
        def sweep_lots(self) -> None:
            """The sweeper records the expiries that have come (a command would, too)."""
            self._do(lambda: ledger.expire_lots([self.user]))

        @rule(quota=st.one_of(st.none(), st.integers(1, 3)), days=st.integers(1, 3))
        def subscribe(self, quota: int | None, days: int) -> None:
            end = clock.now + timedelta(days=days)
            self._do(lambda: ledger.activate_subscription(self.user, "pro", end, quota, "prop"))

        @rule()
        def unsubscribe(self) -> None:
            self._do(lambda: ledger.cancel_subscription(self.user, "prop"))

        @rule(target=jobs, kind=KINDS, body=BODIES, key=KEYS)
        def request(self, kind: str, body: dict[str, int], key: str | None) -> UUID:
            """Every request is a new job id; a key still remembered (its request within the
            key's lifetime) answers its first job, charging nothing, for the same request,
            and refuses another request."""
            job_id = uuid4()
            before = ledger.account(self.user)
            known = self.keys.get(key) if key is not None else None
            live = known is not None and clock.now < known[3] + ledger.options.key_ttl
            repeat = live and known is not None and (known[1], known[2]) == (kind, body)
            try:
                result = self._do(lambda: ledger.request_job(self.user, job_id, kind, body, key))
            except IdempotencyKeyReused:
                assert live and not repeat, (key, known)
                assert ledger.account(self.user).version == before.version  # nothing appended
                return job_id
            except InsufficientEntitlement:
                assert not repeat  # a repeat is answered, never refused
                assert ledger.account(self.user).version == before.version
                return job_id
            reservation = result.value
            if repeat:
                assert known is not None
                assert (reservation.job_id, reservation.created) == (known[0], False)
                assert ledger.account(self.user).version == before.version  # charged once
            else:
                assert not live, "a remembered key with another request must be refused"
                assert (reservation.job_id, reservation.created) == (job_id, True)
                if key is not None:
                    self.keys[key] = (job_id, kind, body, clock.now)
            return reservation.job_id  # type: ignore[no-any-return]

        @rule(job=jobs)
        def complete(self, job: UUID) -> None:
            if ledger.account(self.user).job(job) is not None:
                self._do(lambda: ledger.complete_job(self.user, job, [{"key": f"{job}.png"}]))

        @rule(job=jobs)
        def fail(self, job: UUID) -> None:
            if ledger.account(self.user).job(job) is not None:
                before = ledger.account(self.user)
                applied = self._do(lambda: ledger.fail_job(self.user, job, {"code": "x"})).value
                after = ledger.account(self.user)
                record = before.job(job)
                assert record is not None
                if applied and not record["refunded"]:
                    # Given back, less what expired as it came back (to a lot already expired)
                    # or with it (lots whose expiry came before the command).
                    new = list(ledger.events.get(self.user, gt=before.version))
                    expired = sum(
                        e.amount
                        for e in new
                        if isinstance(e, Account.PointsExpired) and e.source == record["source"]
                    )
                    assert [e.amount for e in new if isinstance(e, Account.Refunded)] == [record["amount"]]
                    assert (
                        after.balance_of(record["source"])
                        == before.balance_of(record["source"]) + record["amount"] - expired
                    )

        @rule(job=jobs)
        def cancel(self, job: UUID) -> None:
            if ledger.account(self.user).job(job) is not None:
                self._do(lambda: ledger.cancel_job(self.user, job))

        @rule(job=jobs)
        def admin_refund(self, job: UUID) -> None:
            record = ledger.account(self.user).job(job)
            if record is None:
                return
            try:
                ledger.admin_refund(self.user, job, "prop", by="admin")
            except JobAlreadyRefunded:
                assert record["refunded"]
            else:
                assert not record["refunded"]

        @rule(minutes=st.integers(1, 60 * 30))
        def time_passes(self, minutes: int) -> None:
            clock.advance(minutes=minutes)

        @rule()
        def sweep(self) -> None:
            self._do(lambda: ledger.expire_stale_reservations([self.user], clock.now, timedelta(minutes=30)))

        @rule()
        def duplicate_last_command(self) -> None:
            if self.last is not None:
                before = ledger.account(self.user).version
                try:
                    self.last()
                except (InsufficientEntitlement, IdempotencyKeyReused, JobAlreadyRefunded, InvalidAmount):
                    # Refused again (e.g. a subscription whose end has passed meanwhile):
                    # a refused command appends nothing.
                    assert ledger.account(self.user).version == before

        @invariant()
        def invariants_hold(self) -> None:
            account = ledger.account(self.user)
            events = list(ledger.events.get(self.user))
            check_account_invariants(events, account)
            # A fresh replay from the events equals the (possibly snapshot-loaded) account.
            replayed: Account | None = None
            for event in events:
                replayed = event.mutate(replayed)
            assert replayed is not None
            assert (replayed.credits, replayed.tickets, replayed.jobs) == (
                account.credits,
                account.tickets,
                account.jobs,
            )

    return LedgerMachine


@pytest.mark.parametrize("examples", [60])
def test_random_histories_keep_the_invariants(
    ledger: LedgerApplication, clock: FakeClock, examples: int
) -> None:
    is_memory = ledger.env.get("PERSISTENCE_MODULE") == "eventsourcing.popo"
    run_state_machine_as_test(
        make_machine(ledger, clock),
        settings=settings(
            max_examples=examples if is_memory else examples // 3,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
