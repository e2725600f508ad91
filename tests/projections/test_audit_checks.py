"""Each check of the ledger audit (``projections/audit.py``) against the corruption it is for.

The event store itself is corrupted: events the ``Account``'s guards would never allow (a
second refund, a refund of another amount, a completion after a failure, a reservation twice,
a balance below zero, flows that do not add up) are triggered on an account in memory and
written with the ledger's own mapper into a fresh PostgreSQL database, then projected as the
service would. Or a stored event is altered after it was projected (a subscription's plan, a
reservation's quota day). And each compared column of ``point_balance`` is altered behind the
read model's back. Every test asserts the audit's findings exactly, so that each fails when the
check that finds them is removed (``scripts/mutation_check.py`` removes them one by one).
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

import projections.tracking
from ledger.account import Account
from ledger.policy import PricingPolicy
from projections.audit import MAX_LISTED, AuditReport, Mismatch, audit
from projections.events import EVENTS_TABLE, ledger_mapper
from projections.points import PointsProjection
from projections.runner import ProjectionRunner

AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DAY = "2026-11-26"
PERIOD_END = AT + timedelta(days=30)
POLICY = PricingPolicy()
KEY_TTL = timedelta(days=1)


class CreditsExpired(Account.Event):
    """An event whose class changes the balance in ``evolve`` but has no entry in the effect
    table (``ledger.effects``): the bug the audit's "flows = balance" check is for."""

    amount: int

    def evolve(self, account: Account) -> None:
        account.credits -= self.amount


# ------------------------------------------------------------------------------ factories
def account(credits: int = 0, **tickets: int) -> Account:
    """A new account in memory, with its grants."""
    a = Account.open(uuid4(), AT)
    if credits:
        a.grant_credits(credits, "test grant", AT)
    for ticket_type, count in tickets.items():
        a.grant_tickets(ticket_type, count, "test grant", AT)
    return a


def reserve(a: Account, kind: str = "image") -> UUID:
    """A job reserved by the account's own rules."""
    job = uuid4()
    a.request_job(job, kind, {"project_id": str(uuid4())}, POLICY, AT, None, KEY_TTL)
    return job


def outputs() -> list[dict[str, Any]]:
    return [{"storage_key": f"outputs/{uuid4()}.png", "media_type": "image/png", "width": 8, "height": 8}]


def refunded(a: Account, job: UUID, source: str, amount: int) -> None:
    """A ``Refunded`` event triggered past the account's guards."""
    a.trigger_event(
        Account.Refunded,
        job_id=job,
        source=source,
        amount=amount,
        cause="failed",
        reason="generator_error",
        by=None,
        lots=None,  # as before lots were recorded: given back to what the reservation burnt
        timestamp=AT,
    )


def completed(a: Account, job: UUID, charged: bool) -> None:
    a.trigger_event(Account.JobCompleted, job_id=job, outputs=outputs(), charged=charged, timestamp=AT)


def failed(a: Account, job: UUID) -> None:
    a.trigger_event(
        Account.JobFailed, job_id=job, error={"code": "generator_error"}, expired=False, timestamp=AT
    )


def reserved(a: Account, job: UUID, source: str, amount: int, quota_day: str | None = None) -> None:
    """An ``EntitlementReserved`` event triggered past the account's guards."""
    a.trigger_event(
        Account.EntitlementReserved,
        job_id=job,
        kind="image",
        source=source,
        amount=amount,
        quota_day=quota_day,
        fingerprint="f" * 64,
        idempotency_key=None,
        key_expires_at=None,
        lots=None,  # as before lots were recorded: burnt by the burn order
        timestamp=AT,
    )


def write(url: str, *accounts: Account) -> None:
    """Append the accounts' new events to the event store as the ledger stores them (its
    mapper: topic and JSON state), whatever they say."""
    mapper = ledger_mapper()
    insert(url, [mapper.to_stored_event(e) for a in accounts for e in a.collect_events()])


def insert(url: str, stored: list[StoredEvent]) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {EVENTS_TABLE} (originator_id, originator_version, topic, state) "
            "VALUES (%s, %s, %s, %s)",
            [(s.originator_id, s.originator_version, s.topic, s.state) for s in stored],
        )


def project(url: str) -> None:
    """The ``points`` read model brought up to the head, as its runner does in the service."""
    runner = ProjectionRunner(url, PointsProjection(), poll_interval=1.0)
    runner.catch_up()
    runner.close()


def position(url: str, a: Account, version: int | None = None) -> int:
    """The log position of the account's event ``version`` (default: its last)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"SELECT notification_id FROM {EVENTS_TABLE} WHERE originator_id = %s "
            "AND originator_version = coalesce(%s, (SELECT max(originator_version) "
            f"FROM {EVENTS_TABLE} WHERE originator_id = %s))",
            (a.id, version, a.id),
        ).fetchone()
    assert row is not None
    return int(row[0])


def findings(report: AuditReport) -> list[tuple[UUID | None, str, Any, Any]]:
    return [(m.user_id, m.what, m.expected, m.actual) for m in report.mismatches]


def audit_of(url: str, *accounts: Account) -> AuditReport:
    """Write the accounts' events beside a clean bystander's (3 credits granted, one image
    job reserved), project them, audit."""
    bystander = account(credits=3)
    reserve(bystander)
    write(url, bystander, *accounts)
    project(url)
    report = audit(url)
    assert not report.behind
    assert report.mismatch_count == len(report.mismatches)
    return report


def audited(url: str, *accounts: Account) -> list[tuple[UUID | None, str, Any, Any]]:
    """The findings of ``audit_of`` (the bystander is never named)."""
    return findings(audit_of(url, *accounts))


# ------------------------------------------------------------------------------ a clean story
def test_a_story_told_with_the_accounts_rules_passes(pg_url: str) -> None:
    """The factories above, used as the ``Account`` allows: nothing to find."""
    a = account(credits=10, lookbook=1)
    a.activate_subscription("pro", PERIOD_END, 2, "plan", AT)
    jobs = [reserve(a) for _ in range(4)] + [reserve(a, "video")]
    a.complete_job(jobs[0], outputs(), AT)
    a.fail_job(jobs[1], {"code": "generator_error"}, AT)
    a.cancel_job(jobs[2], "user", AT)
    a.expire_reservations(AT, AT)
    a.complete_job(jobs[3], outputs(), AT)  # late success after the sweeper's refund: free
    a.admin_refund(jobs[0], "bad image", "ops@example.com", AT)
    a.adjust("credit", -1, "correction", "ops@example.com", AT)
    report = audit_of(pg_url, a)
    assert report.ok and findings(report) == [], report.lines()
    assert (report.users, report.events) == (2, 4 + 26)
    # By hand: the subscription paid two images (one completed, then refunded by an admin;
    # one failed), the ticket one (canceled), credits one image and the video (both expired,
    # the image still completed, free); the bystander's 3 credits paid an image.
    assert report.totals == {
        "credit": Counter(granted=10 + 3, reserved=1 + 5 + 1, refunded=1 + 5, adjusted=-1),
        "ticket:lookbook": Counter(granted=1, reserved=1, refunded=1),
        "subscription": Counter(settled=1),
    }
    lines = [line for line in report.lines() if not line.startswith("lag ")]
    assert lines[0].startswith("audited 30 events of 2 users up to position 30 (head 30) in ")
    assert lines[1:] == [
        "totals per source (granted, reserved, refunded, adjusted, settled jobs):",
        "  credit: granted 13, reserved 7, refunded 6, adjusted -1, settled 0",
        "  subscription: granted 0, reserved 0, refunded 0, adjusted 0, settled 1",
        "  ticket:lookbook: granted 1, reserved 1, refunded 1, adjusted 0, settled 0",
        "mismatches: 0",
        "OK",
    ]


def test_the_audit_waits_for_the_read_model_to_reach_the_head_it_saw(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An audit started while the runner is behind waits for it (up to ``wait_s``), rather
    than reporting a read model behind: the runner's commit is held until the audit has
    looked at the runner's position once."""
    a = account(credits=5)
    write(pg_url, a)
    looked = threading.Event()
    position_of = projections.tracking.position

    def looking(conn: psycopg.Connection[Any], name: str) -> int:
        looked.set()
        return position_of(conn, name)

    monkeypatch.setattr(projections.tracking, "position", looking)
    runner = ProjectionRunner(pg_url, PointsProjection(), poll_interval=0.05)
    runner.before_commit = lambda batch: looked.wait(60) and None
    runner.start()
    try:
        report = audit(pg_url, wait_s=60)
    finally:
        runner.stop()
    assert report.ok and not report.behind, report.lines()
    assert (report.position, report.users, report.events) == (2, 1, 2)


# ------------------------------------------------------------------------------ events corrupted
def test_a_second_refund_of_a_job(pg_url: str) -> None:
    a = account(credits=10)
    job = reserve(a)
    a.fail_job(job, {"code": "generator_error"}, AT)
    refunded(a, job, "credit", 1)
    assert audited(pg_url, a) == [(a.id, f"job {job} refunds", 1, 2)]


@pytest.mark.parametrize(
    ("source", "amount"), [("credit", 3), ("ticket:lookbook", 5)], ids=["amount", "source"]
)
def test_a_refund_of_another_amount_or_to_another_source(pg_url: str, source: str, amount: int) -> None:
    a = account(credits=10)
    job = reserve(a, "video")  # 5 credits
    failed(a, job)
    refunded(a, job, source, amount)
    assert audited(pg_url, a) == [(a.id, f"job {job} refund", ("credit", 5), (source, amount))]


def test_a_refund_of_a_job_never_reserved(pg_url: str) -> None:
    a = account(credits=10)
    job = uuid4()
    refunded(a, job, "credit", 1)
    assert audited(pg_url, a) == [(a.id, f"job {job} refunded", "a reservation", None)]


def test_a_charged_completion_after_a_failure(pg_url: str) -> None:
    a = account(credits=10)
    job = reserve(a)
    a.fail_job(job, {"code": "generator_error"}, AT)  # failed and refunded
    completed(a, job, charged=True)
    assert audited(pg_url, a) == [
        (a.id, f"job {job} status after failed", "none", "succeeded"),
        (a.id, f"job {job} settled", "a charge not refunded", "refunded 1"),
    ]


def test_a_charged_completion_after_the_sweepers_refund(pg_url: str) -> None:
    """An expired job may still succeed, delivered free; charged, it keeps a refunded charge."""
    a = account(credits=10)
    job = reserve(a)
    a.expire_reservations(AT, AT)
    completed(a, job, charged=True)
    assert audited(pg_url, a) == [(a.id, f"job {job} settled", "a charge not refunded", "refunded 1")]


@pytest.mark.parametrize(
    ("first", "then", "allowed", "more"),
    [
        ("cancel", "complete", "none", []),
        ("complete", "fail", "none", []),
        ("complete", "complete", "none", [("completions", 1, 2)]),
        ("expire", "cancel", ["succeeded"], []),
    ],
    ids=["completed-after-cancel", "failed-after-success", "completed-twice", "canceled-after-expiry"],
)
def test_a_job_closed_twice(
    pg_url: str, first: str, then: str, allowed: Any, more: list[tuple[str, Any, Any]]
) -> None:
    """A reservation closes once; only a job the sweeper expired may still succeed."""
    a = account(credits=10)
    job = reserve(a)
    closing = {
        "cancel": lambda: a.cancel_job(job, "user", AT),
        "complete": lambda: a.complete_job(job, outputs(), AT),
        "expire": lambda: a.expire_reservations(AT, AT),
    }
    closing[first]()
    if then == "complete":
        completed(a, job, charged=False)
    elif then == "fail":
        failed(a, job)
    else:
        a.trigger_event(Account.JobCanceled, job_id=job, reason="user", timestamp=AT)
    before = {"cancel": "canceled", "complete": "succeeded", "expire": "expired"}[first]
    status = {"complete": "succeeded", "fail": "failed", "cancel": "canceled"}[then]
    expected = [(a.id, f"job {job} status after {before}", allowed, status)]
    expected += [(a.id, f"job {job} {what}", x, y) for what, x, y in more]
    assert audited(pg_url, a) == expected


def test_a_job_reserved_twice(pg_url: str) -> None:
    """Both reservations are charged (flows and balance agree); the account holds one open
    job where the read model counts two."""
    a = account(credits=10)
    job = reserve(a)
    reserved(a, job, "credit", 1)
    assert audited(pg_url, a) == [
        (a.id, f"job {job} reserved", 1, 2),
        (a.id, "point_balance.pending_reservations", 1, 2),
    ]


@pytest.mark.parametrize(
    ("grant", "source", "what"),
    [({"credits": 2}, "credit", "credits"), ({}, "ticket:lookbook", "ticket:lookbook")],
    ids=["credits", "tickets"],
)
def test_a_balance_below_zero(pg_url: str, grant: dict[str, int], source: str, what: str) -> None:
    """A reservation of more than the account holds: its flows add up, to a negative balance."""
    a = account(**grant)
    reserved(a, uuid4(), source, 5 if source == "credit" else 1)
    found = audited(pg_url, a)
    below = -3 if source == "credit" else -1
    assert found == [(a.id, f"{what} after event {position(pg_url, a)}", ">= 0", below)]


def test_points_moved_on_the_subscription(pg_url: str) -> None:
    """The subscription has no balance: a reservation of points on it moves nothing, and
    the flows say so."""
    a = account(credits=10)
    a.activate_subscription("pro", PERIOD_END, None, "plan", AT)
    reserved(a, uuid4(), "subscription", 2, quota_day=DAY)
    assert audited(pg_url, a) == [(a.id, "subscription flows", 0, -2)]


def test_a_balance_moved_outside_the_effect_table(pg_url: str) -> None:
    """An event class whose ``evolve`` moves credits that its effect does not declare: the
    account's balance and its flows part (and the read model, built from the effects, keeps
    the flows' balance)."""
    a = account(credits=5)
    a.trigger_event(CreditsExpired, amount=2, timestamp=AT)
    assert audited(pg_url, a) == [
        (a.id, "credit: granted - reserved + refunded + adjusted", 5, 3),
        (a.id, "point_balance.credits", 3, 5),
    ]


def test_an_event_the_account_cannot_apply(pg_url: str) -> None:
    """A completion of a job the stream never reserved."""
    a = account(credits=5)
    stray = Account.JobCompleted(  # made here: the account in memory cannot apply it either
        originator_id=a.id,
        originator_version=a.version + 1,
        timestamp=AT,
        job_id=uuid4(),
        outputs=outputs(),
        charged=True,
    )
    write(pg_url, a)
    insert(pg_url, [ledger_mapper().to_stored_event(stray)])
    project(pg_url)
    (finding,) = findings(audit(pg_url))
    assert finding[:3] == (
        a.id,
        f"event {position(pg_url, a, a.version + 1)} cannot be applied",
        "a valid event",
    )
    assert str(stray.job_id) in finding[3]


# ------------------------------------------------------------------------------ stored events altered
def alter(url: str, a: Account, version: int, **changes: Any) -> None:
    """Rewrite the state of the account's stored event ``version`` with ``changes``, through
    the ledger's mapper (after the read model applied it)."""
    mapper = ledger_mapper()
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"SELECT topic, state FROM {EVENTS_TABLE} WHERE originator_id = %s AND originator_version = %s",
            (a.id, version),
        ).fetchone()
        assert row is not None
        event = mapper.to_domain_event(StoredEvent(a.id, version, row[0], bytes(row[1])))
        event.__dict__.update(changes)
        conn.execute(
            f"UPDATE {EVENTS_TABLE} SET state = %s WHERE originator_id = %s AND originator_version = %s",
            (mapper.to_stored_event(event).state, a.id, version),
        )


def subscribed() -> tuple[Account, int, int]:
    """An account with a subscription (daily quota 3) that paid one job: the account, and
    the versions of its activation and of that job's reservation."""
    a = account(credits=10, lookbook=2)
    a.activate_subscription("pro", PERIOD_END, 3, "plan", AT)
    activation = a.version
    reserve(a)
    return a, activation, a.version - 1  # the reservation, then the job request


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"plan": "max"}, ("max", PERIOD_END, 3)),
        ({"daily_quota": 5}, ("pro", PERIOD_END, 5)),
        ({"period_end": PERIOD_END + timedelta(days=1)}, ("pro", PERIOD_END + timedelta(days=1), 3)),
    ],
    ids=["plan", "daily_quota", "period_end"],
)
def test_a_subscription_event_altered(pg_url: str, changes: dict[str, Any], expected: Any) -> None:
    a, activation, _ = subscribed()
    write(pg_url, a)
    project(pg_url)
    alter(pg_url, a, activation, **changes)
    assert findings(audit(pg_url)) == [(a.id, "point_balance.subscription", expected, ("pro", PERIOD_END, 3))]


def test_a_reservations_quota_day_altered(pg_url: str) -> None:
    a, _, reservation = subscribed()
    write(pg_url, a)
    project(pg_url)
    alter(pg_url, a, reservation, quota_day="2026-11-25")
    assert findings(audit(pg_url)) == [(a.id, "point_balance.quota", ("2026-11-25", 1), (DAY, 1))]


# ------------------------------------------------------------------------------ read model altered
@pytest.mark.parametrize(
    ("tamper", "what", "expected", "actual"),
    [
        ("credits = credits + 1", "credits", 10, 11),
        ("tickets = '{\"lookbook\": 1}'", "tickets", {"lookbook": 2}, {"lookbook": 1}),
        ("subscription_plan = 'max'", "subscription", ("pro", PERIOD_END, 3), ("max", PERIOD_END, 3)),
        (
            "subscription_period_end = subscription_period_end + interval '1 second'",
            "subscription",
            ("pro", PERIOD_END, 3),
            ("pro", PERIOD_END + timedelta(seconds=1), 3),
        ),
        ("daily_quota = NULL", "subscription", ("pro", PERIOD_END, 3), ("pro", PERIOD_END, None)),
        ("quota_day = quota_day - 1", "quota", (DAY, 1), ("2026-11-25", 1)),
        ("used_today = 0", "quota", (DAY, 1), (DAY, 0)),
        ("pending_reservations = 0", "pending_reservations", 1, 0),
    ],
    ids=["credits", "tickets", "plan", "period_end", "daily_quota", "quota_day", "used_today", "pending"],
)
def test_a_balance_column_altered(pg_url: str, tamper: str, what: str, expected: Any, actual: Any) -> None:
    a, _, _ = subscribed()
    write(pg_url, a)
    project(pg_url)
    with psycopg.connect(pg_url) as conn:
        conn.execute(f"UPDATE point_balance SET {tamper} WHERE user_id = %s", (a.id,))
    found = findings(audit(pg_url))
    # a balance its lines no longer add up to: the statement check says so too
    sums = [f for f in found if f[1].endswith(": sum of point_usage lines")]
    assert [f for f in found if f not in sums] == [(a.id, f"point_balance.{what}", expected, actual)]
    statement = {
        "credits": [(a.id, "credit: sum of point_usage lines", 11, 10)],
        "tickets": [(a.id, "ticket:lookbook: sum of point_usage lines", 1, 2)],
    }
    assert sums == statement.get(what, [])


def test_a_balance_row_deleted_or_without_events(pg_url: str) -> None:
    a, _, _ = subscribed()
    write(pg_url, a)
    project(pg_url)
    stranger = uuid4()
    with psycopg.connect(pg_url) as conn:
        conn.execute("DELETE FROM point_balance WHERE user_id = %s", (a.id,))
        conn.execute(
            "INSERT INTO point_balance (user_id, credits, tickets, position, updated_at) "
            "VALUES (%s, 0, '{}', 1, now())",
            (stranger,),
        )
    found = findings(audit(pg_url))
    assert sorted(found, key=str) == sorted(
        [
            (
                a.id,
                "point_balance row",
                {
                    "credits": 10,
                    "tickets": {"lookbook": 2},
                    "subscription": ("pro", PERIOD_END, 3),
                    "quota": (DAY, 1),
                    "pending_reservations": 1,
                },
                None,
            ),
            (stranger, "point_balance row without events", None, "a row"),
        ],
        key=str,
    )


def test_a_usage_line_no_event_wrote(pg_url: str) -> None:
    """An accounting line added among a user's own lines (a position no event of theirs has)."""
    a = account(credits=10)
    write(pg_url, a)
    project(pg_url)
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO point_usage SELECT position + 1000, user_id, job_id, type, source, amount, "
            "balance_after, reason, created_at FROM point_usage WHERE user_id = %s",
            (a.id,),
        )
    grant = position(pg_url, a)
    added = (grant + 1000, None, "grant", "credit", 10, 10, "test grant", AT, None)
    assert findings(audit(pg_url)) == [
        # the statement check: the line does not chain up to the balance ...
        (a.id, f"point_usage line {grant + 1000}: balance before + amount", 20, 10),
        (a.id, "credit: sum of point_usage lines", 10, 20),
        # ... and the replay: no event wrote it
        (a.id, f"point_usage line {grant + 1000}", None, added),
    ]


def test_the_report_lists_the_first_50_mismatches_and_counts_them_all(pg_url: str) -> None:
    a = account()
    for _ in range(MAX_LISTED + 1):
        a.grant_credits(1, "drip", AT)
    write(pg_url, a)
    project(pg_url)
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE point_usage SET reason = 'altered' WHERE user_id = %s", (a.id,))
    report = audit(pg_url)
    assert (report.mismatch_count, len(report.mismatches)) == (MAX_LISTED + 1, MAX_LISTED)
    assert report.lines()[-3:] == [f"  {report.mismatches[-1]}", "  ... and 1 more", "FAILED"]
    part = AuditReport()  # each worker's report is bounded too (it is sent back whole)
    for i in range(MAX_LISTED + 1):
        part.mismatch(Mismatch(a.id, f"finding {i}", 0, 1))
    assert (part.mismatch_count, len(part.mismatches)) == (MAX_LISTED + 1, MAX_LISTED)
    assert part.mismatches[-1].what == f"finding {MAX_LISTED - 1}"
