"""The ledger audit: passes on a clean history, fails naming the user when a read-model row
was altered behind its back, streams 100,000 events and reports its rate."""

from __future__ import annotations

import multiprocessing
import time
from uuid import uuid4

import psycopg
import pytest
from typer.testing import CliRunner

import projections.audit
from infra.cli import app as cli
from infra.settings import get_settings
from ledger.application import LedgerApplication
from projections.audit import audit
from projections.runner import Projector
from tests.factories import job_request, new_user
from tests.projections.history import random_history


def _history(pg_url: str, ledger: LedgerApplication) -> None:
    random_history(ledger, users=10, events=800, seed=5)
    Projector(pg_url, poll_interval=1.0).catch_up()


def _run_cli(pg_url: str, *args: str) -> tuple[int, str]:
    get_settings.cache_clear()  # the settings are cached per process; this test changes the env
    result = CliRunner().invoke(
        cli,
        ["ledger", "audit", "--wait", "1", *args],
        env={"VTO_DATABASE_URL": pg_url, "VTO_JWT_SECRET": "s" * 40},
    )
    get_settings.cache_clear()
    return result.exit_code, result.output + repr(result.exception)


def test_audit_passes_on_a_clean_history(pg_url: str, pg_ledger: LedgerApplication) -> None:
    _history(pg_url, pg_ledger)
    report = audit(pg_url)
    assert report.ok, report.lines()
    assert report.users == 10 and report.events >= 800 and report.rate > 0
    code, output = _run_cli(pg_url)
    assert code == 0, output
    assert "mismatches: 0" in output and "events/s" in output and "credit: granted" in output


def test_audit_fails_naming_the_user_of_an_altered_balance(pg_url: str, pg_ledger: LedgerApplication) -> None:
    _history(pg_url, pg_ledger)
    victim = new_user(pg_ledger, credits=7)
    Projector(pg_url, poll_interval=1.0).catch_up()
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE point_balance SET credits = credits + 1 WHERE user_id = %s", (victim,))
    report = audit(pg_url)
    assert not report.ok
    assert {m.user_id for m in report.mismatches} == {victim}
    code, output = _run_cli(pg_url)
    assert code != 0 and str(victim) in output and "FAILED" in output
    code, output = _run_cli(pg_url, "--user", str(victim))
    assert code != 0 and str(victim) in output


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE point_usage SET amount = amount - 1 WHERE position = (SELECT max(position) FROM point_usage "
        "WHERE user_id = %(u)s)",
        "DELETE FROM point_usage WHERE position = "
        "(SELECT max(position) FROM point_usage WHERE user_id = %(u)s)",
        "UPDATE point_usage SET balance_after = 99 WHERE user_id = %(u)s AND type = 'reservation'",
        "UPDATE point_usage SET job_id = gen_random_uuid() WHERE user_id = %(u)s AND type = 'reservation'",
        "UPDATE point_usage SET created_at = created_at + interval '1 microsecond' WHERE user_id = %(u)s",
        "UPDATE point_usage SET reason = reason || ' ' WHERE user_id = %(u)s AND type = 'grant'",
        "UPDATE point_usage SET source = 'ticket:video' WHERE user_id = %(u)s AND type = 'grant'",
        "UPDATE point_usage SET user_id = gen_random_uuid() WHERE position = (SELECT max(position) "
        "FROM point_usage WHERE user_id = %(u)s)",
        "INSERT INTO point_usage SELECT position + 1000000, user_id, job_id, type, source, amount, "
        "balance_after, reason, created_at FROM point_usage WHERE user_id = %(u)s AND type = 'grant'",
    ],
    ids=["amount", "deleted", "balance_after", "job_id", "created_at", "reason", "source", "moved", "added"],
)
def test_audit_fails_naming_the_user_of_an_altered_usage_line(
    pg_url: str, pg_ledger: LedgerApplication, tamper: str
) -> None:
    _history(pg_url, pg_ledger)
    victim = new_user(pg_ledger, credits=7)
    pg_ledger.request_job(victim, uuid4(), "image", job_request())
    Projector(pg_url, poll_interval=1.0).catch_up()
    with psycopg.connect(pg_url) as conn:
        conn.execute(tamper, {"u": victim})
        strays = {
            r[0]
            for r in conn.execute("SELECT user_id FROM point_usage EXCEPT SELECT user_id FROM point_balance")
        }
    assert len(strays) == tamper.startswith("UPDATE point_usage SET user_id")
    report = audit(pg_url)
    assert {m.user_id for m in report.mismatches} == {victim} | strays  # a moved line: missing, and a stray
    code, output = _run_cli(pg_url)
    assert code != 0 and str(victim) in output


def test_a_usage_mismatch_shows_the_line_as_the_table_holds_it(
    pg_url: str, pg_ledger: LedgerApplication
) -> None:
    victim, job = new_user(pg_ledger, credits=7), uuid4()
    pg_ledger.request_job(victim, job, "image", job_request())
    Projector(pg_url, poll_interval=1.0).catch_up()
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE point_usage SET amount = amount - 1 WHERE job_id = %s", (job,))
        (stored,) = conn.execute("SELECT * FROM point_usage WHERE job_id = %s", (job,)).fetchall()
    mismatches = audit(pg_url).mismatches
    (m,) = [m for m in mismatches if m.what == f"point_usage line {stored[0]}"]
    assert m.user_id == victim
    assert m.actual == stored[:1] + stored[2:]  # the row after its user id: its job id a UUID
    assert m.expected == (*m.actual[:4], m.actual[4] + 1, *m.actual[5:])


def test_audit_fails_when_the_read_model_is_behind(pg_url: str, pg_ledger: LedgerApplication) -> None:
    new_user(pg_ledger, credits=1)
    report = audit(pg_url, wait_s=0.1)
    assert not report.ok and report.behind


@pytest.mark.slow
def test_audit_streams_100k_events_and_reports_its_rate(pg_url: str, pg_ledger: LedgerApplication) -> None:
    random_history(pg_ledger, users=2000, events=100_000, seed=11)
    Projector(pg_url, batch_size=2000, poll_interval=1.0).catch_up()
    started = time.monotonic()
    report = audit(pg_url)
    elapsed = time.monotonic() - started
    print("\n".join(report.lines()))
    assert report.ok, report.lines()[-5:]
    assert report.events >= 100_000 and report.rate > 0
    assert elapsed < 60


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_audit_in_worker_processes_finds_what_one_process_finds(
    pg_url: str, pg_ledger: LedgerApplication, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    """Three processes, each a range of the users, in the snapshot of the caller: the same
    users, events, totals and mismatches as one process, for an altered balance row and an
    altered usage line of two users (wherever they fall among the ranges). Forked (from a
    process of one thread, as here) or spawned."""
    monkeypatch.setattr(projections.audit, "worker_context", lambda: multiprocessing.get_context(start))
    _history(pg_url, pg_ledger)
    balance_victim = new_user(pg_ledger, credits=7)
    usage_victim = new_user(pg_ledger, credits=7)
    pg_ledger.request_job(usage_victim, uuid4(), "image", job_request())
    Projector(pg_url, poll_interval=1.0).catch_up()
    clean = audit(pg_url, workers=3)
    assert clean.ok and clean.users == 12, clean.lines()
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "UPDATE point_balance SET tickets = '{\"lookbook\": 1}' WHERE user_id = %s", (balance_victim,)
        )
        conn.execute(
            "UPDATE point_usage SET amount = amount - 1 WHERE user_id = %s AND type = 'reservation'",
            (usage_victim,),
        )
    one, three = audit(pg_url, workers=1), audit(pg_url, workers=3)
    for report in (one, three):
        assert not report.ok
        assert {m.user_id for m in report.mismatches} == {balance_victim, usage_victim}
    assert (three.users, three.events, three.mismatch_count) == (one.users, one.events, one.mismatch_count)
    assert three.totals == one.totals and sorted(map(str, three.mismatches)) == sorted(
        map(str, one.mismatches)
    )


def test_the_usage_lines_of_each_user_chain_up_to_the_balance(
    pg_url: str, pg_ledger: LedgerApplication
) -> None:
    """Opening plus lines is closing (``GET /points/statement``): the audit checks it on the
    read models themselves, line by line and against ``point_balance``."""
    victim, job = new_user(pg_ledger, credits=7), uuid4()
    pg_ledger.request_job(victim, job, "image", job_request())
    pg_ledger.grant_credits(victim, 5, "promo", category="promotional")
    Projector(pg_url, poll_interval=1.0).catch_up()
    assert audit(pg_url).ok
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE point_usage SET amount = amount - 1 WHERE job_id = %s", (job,))
        (position,) = conn.execute("SELECT position FROM point_usage WHERE job_id = %s", (job,)).fetchone()
    found = {(m.what, m.expected, m.actual) for m in audit(pg_url).mismatches}
    assert (f"point_usage line {position}: balance before + amount", 7 - 2, 7 - 1) in found
    assert ("credit: sum of point_usage lines", 7 - 1 + 5, 7 - 2 + 5) in found


def test_a_balance_the_usage_lines_do_not_add_up_to(pg_url: str, pg_ledger: LedgerApplication) -> None:
    victim = new_user(pg_ledger, credits=7, lookbook=2)
    Projector(pg_url, poll_interval=1.0).catch_up()
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "UPDATE point_balance SET tickets = jsonb_set(tickets, '{lookbook}', '3') WHERE user_id = %s",
            (victim,),
        )
    found = [(m.user_id, m.what, m.expected, m.actual) for m in audit(pg_url).mismatches]
    assert (victim, "ticket:lookbook: sum of point_usage lines", 3, 2) in found


def test_a_line_granting_a_lot_records_its_category(pg_url: str, pg_ledger: LedgerApplication) -> None:
    victim = new_user(pg_ledger, credits=7)
    pg_ledger.grant_credits(victim, 5, "promo", category="promotional")
    pg_ledger.adjust(victim, "credit", 2, "goodwill")
    pg_ledger.adjust(victim, "credit", -1, "correction")
    Projector(pg_url, poll_interval=1.0).catch_up()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT type, amount, category FROM point_usage WHERE user_id = %s ORDER BY position", (victim,)
        ).fetchall()
        assert rows == [
            ("grant", 7, "paid"),
            ("grant", 5, "promotional"),
            ("adjustment", 2, "paid"),
            ("adjustment", -1, None),
        ]
        assert audit(pg_url).ok
        conn.execute("UPDATE point_usage SET category = 'paid' WHERE user_id = %s AND amount = 5", (victim,))
    (m,) = audit(pg_url).mismatches
    assert m.user_id == victim and m.expected[-1] == "promotional" and m.actual[-1] == "paid"
