"""A mutation check of named breaks: does the suite fail when the code is wrong?

Each ``Break`` in ``BREAKS`` removes or bends one rule of the code (``old`` replaced by ``new``,
a snippet found exactly once in ``path``) and names the tests that must fail because of it.
The check copies the working tree (tracked and untracked files that git does not ignore) to a
scratch directory, first runs every named test there unbroken (they must pass, or a break
would be "caught" by a test that fails anyway), then for each break: restores the file,
applies the break, runs the break's tests in the scratch copy (all of them, the scratch copy
first on ``PYTHONPATH``), and reports it

- killed: tests failed (or ran out of time); ``-v`` says which failed and which passed;
- survived: they passed with the break in place: a test is missing or too weak;
- error: pytest could not run them (a break that does not import, a test id that is gone);
- stale: ``old`` is not in ``path`` exactly once (the code changed: update the break).

The working tree is never touched. Exit status 0 only when every break chosen was killed.

    uv run --frozen python scripts/mutation_check.py            # every break
    uv run --frozen python scripts/mutation_check.py --list     # names, files and tests
    uv run --frozen python scripts/mutation_check.py 'audit-refund*' audit-behind

To add a break (for example over ``ledger/``): append a ``Break`` to ``BREAKS`` (or a table of
its own, added to ``BREAKS``) with the smallest snippet that is unique in its file, and the
fewest tests that catch it (each break's tests are run alone: keep them fast).
``tests/scripts/test_mutation_check.py`` checks that every break applies and names tests that
exist, so a break that the code outgrew fails the suite instead of passing unnoticed.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 900.0  # per break: a hang counts as killed, not as survived


@dataclass(frozen=True)
class Break:
    name: str
    path: str  # relative to the repository root
    old: str  # a snippet found exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest node ids that must fail with the break in place
    why: str = ""

    def apply(self, text: str) -> str:
        found = text.count(self.old)
        if found != 1:
            raise StaleBreak(f"{self.name}: {self.old!r} found {found} times in {self.path}")
        return text.replace(self.old, self.new)


class StaleBreak(Exception):
    """The break's snippet is not in its file exactly once."""


AUDIT = "projections/audit.py"
CHECKS = "tests/projections/test_audit_checks.py"
AUDIT_TESTS = "tests/projections/test_audit.py"
POINT_LOT_TESTS = "tests/projections/test_point_lots.py"

AUDIT_BREAKS: tuple[Break, ...] = (
    Break(
        "audit-reserved-twice",
        AUDIT,
        "if job_id in self.reservations:",
        "if False:",
        (f"{CHECKS}::test_a_job_reserved_twice",),
        "a job reserved twice is not reported",
    ),
    Break(
        "audit-refunded-twice",
        AUDIT,
        "if self.refunds[job_id] > 1:",
        "if False:",
        (f"{CHECKS}::test_a_second_refund_of_a_job",),
        "a second refund of a job is not reported",
    ),
    Break(
        "audit-refund-without-reservation",
        AUDIT,
        'self.fail(f"job {job_id} refunded", "a reservation", None)',
        "pass",
        (f"{CHECKS}::test_a_refund_of_a_job_never_reserved",),
        "a refund of a job never reserved is not reported",
    ),
    Break(
        "audit-refund-of-another-charge",
        AUDIT,
        "elif refund != (reservation.source, reservation.amount):",
        "elif False:",
        (f"{CHECKS}::test_a_refund_of_another_amount_or_to_another_source",),
        "a refund of another amount or to another source is not reported",
    ),
    Break(
        "audit-refund-amount-ignored",
        AUDIT,
        "elif refund != (reservation.source, reservation.amount):",
        "elif refund[0] != reservation.source:",
        (f"{CHECKS}::test_a_refund_of_another_amount_or_to_another_source[amount]",),
        "only the refund's source is compared with the reservation, not its amount",
    ),
    Break(
        "audit-status-transitions",
        AUDIT,
        "if change.reserved is None and status not in _NEXT_STATUS.get(before, ()):",
        "if False:",
        (
            f"{CHECKS}::test_a_charged_completion_after_a_failure",
            f"{CHECKS}::test_a_job_closed_twice",
        ),
        "a job closed twice (completed after a failure or a cancel, failed after success) passes",
    ),
    Break(
        "audit-expired-may-succeed-only",
        AUDIT,
        "ReservationStatus.EXPIRED: frozenset({ReservationStatus.SUCCEEDED}),",
        "ReservationStatus.EXPIRED: frozenset(ReservationStatus),",
        (f"{CHECKS}::test_a_job_closed_twice[canceled-after-expiry]",),
        "an expired job may be closed again by anything",
    ),
    Break(
        "audit-settled-after-refund",
        AUDIT,
        "if change.settled and refunds:",
        "if False:",
        (f"{CHECKS}::test_a_charged_completion_after_the_sweepers_refund",),
        "a charge kept (settled) after it was refunded is not reported",
    ),
    Break(
        "audit-completed-twice",
        AUDIT,
        "if self.settled[job_id] > 1:",
        "if False:",
        (f"{CHECKS}::test_a_job_closed_twice[completed-twice]",),
        "a second completion is not counted",
    ),
    Break(
        "audit-credits-below-zero",
        AUDIT,
        "if account.credits < 0:",
        "if False:",
        (f"{CHECKS}::test_a_balance_below_zero[credits]",),
        "credits below zero are not reported",
    ),
    Break(
        "audit-tickets-below-zero",
        AUDIT,
        "if count < 0:",
        "if False:",
        (f"{CHECKS}::test_a_balance_below_zero[tickets]",),
        "tickets below zero are not reported",
    ),
    Break(
        "audit-flows-equal-balance",
        AUDIT,
        "if self.flows[source] != balance:",
        "if False:",
        (f"{CHECKS}::test_a_balance_moved_outside_the_effect_table",),
        "granted - reserved + refunded + adjusted is not compared with the balance",
    ),
    Break(
        "audit-subscription-flows",
        AUDIT,
        "if self.flows[SUBSCRIPTION] != 0:",
        "if False:",
        (f"{CHECKS}::test_points_moved_on_the_subscription",),
        "points moved on the subscription are not reported",
    ),
    Break(
        "audit-event-cannot-be-applied",
        AUDIT,
        'self.fail(f"event {n.position} cannot be applied", "a valid event", repr(exc))',
        "pass",
        (f"{CHECKS}::test_an_event_the_account_cannot_apply",),
        "an event the account cannot apply is skipped silently",
    ),
    Break(
        "audit-totals",
        AUDIT,
        "totals[movement.source][movement.flow] += movement.amount",
        "pass",
        (f"{CHECKS}::test_a_story_told_with_the_accounts_rules_passes",),
        "the totals per source are not counted",
    ),
    *(
        Break(
            f"audit-compare-{column.replace('_', '-')}",
            AUDIT,
            "if actual[name] != value:",
            f'if actual[name] != value and name != "{column}":',
            tests,
            f"point_balance's {column} is not compared",
        )
        for column, tests in (
            ("credits", (f"{CHECKS}::test_a_balance_column_altered[credits]",)),
            ("tickets", (f"{CHECKS}::test_a_balance_column_altered[tickets]",)),
            (
                "subscription",
                (
                    f"{CHECKS}::test_a_balance_column_altered[plan]",
                    f"{CHECKS}::test_a_balance_column_altered[period_end]",
                    f"{CHECKS}::test_a_balance_column_altered[daily_quota]",
                    f"{CHECKS}::test_a_subscription_event_altered",
                ),
            ),
            (
                "quota",
                (
                    f"{CHECKS}::test_a_balance_column_altered[quota_day]",
                    f"{CHECKS}::test_a_balance_column_altered[used_today]",
                    f"{CHECKS}::test_a_reservations_quota_day_altered",
                ),
            ),
            (
                "pending_reservations",
                (
                    f"{CHECKS}::test_a_balance_column_altered[pending]",
                    f"{CHECKS}::test_a_job_reserved_twice",
                ),
            ),
        )
    ),
    Break(
        "audit-balance-row-missing",
        AUDIT,
        'replay.fail("point_balance row", expected, None)',
        "pass",
        (f"{CHECKS}::test_a_balance_row_deleted_or_without_events",),
        "a user with events and no point_balance row passes",
    ),
    Break(
        "audit-balance-row-without-events",
        AUDIT,
        'report.mismatch(Mismatch(UUID(row[0]), "point_balance row without events", None, "a row"))',
        "pass",
        (f"{CHECKS}::test_a_balance_row_deleted_or_without_events",),
        "a point_balance row of no user with events passes",
    ),
    Break(
        "audit-usage-lines",
        AUDIT,
        "if lines != expected_lines:",
        "if False:",
        (f"{AUDIT_TESTS}::test_audit_fails_naming_the_user_of_an_altered_usage_line[amount]",),
        "point_usage is not compared",
    ),
    Break(
        "audit-usage-line-fields",
        AUDIT,
        "if found != line:",
        "if found is None:",
        (f"{AUDIT_TESTS}::test_a_usage_mismatch_shows_the_line_as_the_table_holds_it",),
        "only missing usage lines are reported, not altered ones",
    ),
    Break(
        "audit-usage-line-added",
        AUDIT,
        'replay.fail(f"point_usage line {position}", None, _shown(line))',
        "pass",
        (
            f"{AUDIT_TESTS}::test_audit_fails_naming_the_user_of_an_altered_usage_line[added]",
            f"{CHECKS}::test_a_usage_line_no_event_wrote",
        ),
        "a usage line that no event wrote, among a user's lines, passes",
    ),
    Break(
        "audit-usage-line-without-user",
        AUDIT,
        "for row in usage:",
        "for row in ():",
        (f"{AUDIT_TESTS}::test_audit_fails_naming_the_user_of_an_altered_usage_line[moved]",),
        "a usage line of a user without events passes",
    ),
    Break(
        "audit-lots-compared",
        AUDIT,
        "_diff_lots(replay, [r[1:] for r in lots.of(key)])",
        "lots.of(key)",
        (f"{POINT_LOT_TESTS}::test_the_audit_finds_a_corrupted_lot[remaining]",),
        "point_lot is not compared with the lots recomputed from the events",
    ),
    Break(
        "audit-lot-without-events",
        AUDIT,
        'report.mismatch(Mismatch(UUID(row[0]), f"point_lot {row[1]} without events", None, row[1:]))',
        "pass",
        (f"{POINT_LOT_TESTS}::test_a_lot_row_without_events_is_found",),
        "a point_lot row of no user with events passes",
    ),
    Break(
        "audit-behind",
        AUDIT,
        "report.behind = position < start_head",
        "report.behind = False",
        (f"{AUDIT_TESTS}::test_audit_fails_when_the_read_model_is_behind",),
        "a read model behind the head passes",
    ),
    Break(
        "audit-no-wait",
        AUDIT,
        "while tracking.position(conn, POINTS) < start_head",
        "while False",
        (f"{CHECKS}::test_the_audit_waits_for_the_read_model_to_reach_the_head_it_saw",),
        "the audit does not wait for the read model to reach the head it saw",
    ),
    Break(
        "audit-lists-one-more",
        AUDIT,
        "if len(self.mismatches) < MAX_LISTED:",
        "if len(self.mismatches) <= MAX_LISTED:",
        (f"{CHECKS}::test_the_report_lists_the_first_50_mismatches_and_counts_them_all",),
        "the report lists one mismatch more than MAX_LISTED",
    ),
    Break(
        "audit-report-says-ok",
        AUDIT,
        'out.append("OK" if self.ok else "FAILED")',
        'out.append("OK")',
        (
            f"{CHECKS}::test_the_report_lists_the_first_50_mismatches_and_counts_them_all",
            f"{AUDIT_TESTS}::test_audit_fails_naming_the_user_of_an_altered_balance",
        ),
        "the report's last line says OK whatever it found",
    ),
    Break(
        "audit-ok-ignores-mismatches",
        AUDIT,
        "return self.mismatch_count == 0 and not self.behind",
        "return not self.behind",
        (f"{AUDIT_TESTS}::test_audit_fails_naming_the_user_of_an_altered_balance",),
        "mismatches do not fail the audit (report.ok, the command's exit status)",
    ),
    Break(
        "audit-parts-mismatch-count",
        AUDIT,
        "report.mismatch_count += part.mismatch_count",
        "report.mismatch_count += 0",
        (f"{AUDIT_TESTS}::test_audit_fails_naming_the_user_of_an_altered_balance",),
        "the mismatches of the replay's parts are not added up",
    ),
)

ACCOUNT = "ledger/account.py"
EFFECTS = "ledger/effects.py"
LOTS = "ledger/lots.py"
STORE = "infra/account_store.py"
WRITER = "infra/group_commit.py"
POLICY_TESTS = "tests/ledger/test_policy.py"
KEY_TESTS = "tests/ledger/test_idempotency.py"
REFUND_TESTS = "tests/ledger/test_refunds.py"
LOT_TESTS = "tests/ledger/test_lots.py"
EFFECT_TESTS = "tests/ledger/test_effects.py"
STORE_TESTS = "tests/infra/test_account_store.py"
WRITER_TESTS = "tests/infra/test_group_commit.py"

# The ledger's rules (issue 26): each break's tests run on the in-memory ledger where they can
# ("[memory]"), so a break costs seconds.
LEDGER_BREAKS: tuple[Break, ...] = (
    Break(
        "ledger-refund-moves-nothing",
        EFFECTS,
        "e.source, e.amount, Flow.REFUNDED, UsageType.REFUND, reason, job,",
        "e.source, 0, Flow.REFUNDED, UsageType.REFUND, reason, job,",
        (
            f"{EFFECT_TESTS}::test_the_movements_of_a_history_add_up_to_the_account_balances",
            f"{REFUND_TESTS}::test_an_admin_refund_twice_is_refused_the_second_time[memory]",
        ),
        "a refund's balance change zeroed in the effect table (the account and a check that used the "
        "same table agreed)",
    ),
    Break(
        "ledger-refund-twice",
        ACCOUNT,
        """        if job["refunded"]:
            return
        self.trigger_event(
            self.Refunded,""",
        """        self.trigger_event(
            self.Refunded,""",
        (f"{REFUND_TESTS}::test_a_job_refunded_by_an_admin_then_ended_is_not_refunded_again",),
        "a job refunded by an admin is refunded again when it fails, is canceled or expires",
    ),
    Break(
        "ledger-admin-refund-twice",
        ACCOUNT,
        """        if job["refunded"]:
            raise JobAlreadyRefunded(job_id)""",
        "",
        (
            f"{REFUND_TESTS}::test_an_admin_refund_twice_is_refused_the_second_time[memory]",
            f"{KEY_TESTS}::test_admin_refund_once_then_conflict[memory]",
        ),
        "an admin refund is not refused for a job already refunded",
    ),
    Break(
        "ledger-key-forgotten",
        ACCOUNT,
        "        if idempotency_key is not None:\n            known = self.keys.get(idempotency_key)",
        "        if False:\n            known = self.keys.get(idempotency_key)",
        (f"{KEY_TESTS}::test_same_key_same_request_returns_the_same_job_and_charges_once[memory]",),
        "an Idempotency-Key repeated with a new job id charges again",
    ),
    Break(
        "ledger-job-id-reserved-twice",
        ACCOUNT,
        "        existing = self.jobs.get(str(job_id))",
        "        existing = None",
        (f"{KEY_TESTS}::test_a_job_id_is_reserved_at_most_once[memory]",),
        "a job id reserved twice",
    ),
    Break(
        "ledger-credits-overdrawn",
        ACCOUNT,
        "        if credits >= cost:",
        "        if credits >= cost - 1:",
        (f"{POLICY_TESTS}::test_rejection_appends_nothing[memory]",),
        "credits one short of the cost still pay",
    ),
    Break(
        "ledger-ticket-pays-any-kind",
        ACCOUNT,
        "        for ticket_type in policy.tickets_for(kind):",
        "        for ticket_type in policy.ticket_kinds:",
        (f"{POLICY_TESTS}::test_tickets_only_pay_for_their_own_kind[memory]",),
        "a LookBook ticket pays for a video",
    ),
    Break(
        "ledger-quota-ignored",
        ACCOUNT,
        "            if quota is None or self.quota_used_on(day) < quota:",
        "            if True:",
        (f"{POLICY_TESTS}::test_daily_quota_resets_at_the_utc_day_boundary[memory]",),
        "a subscription pays past its daily quota",
    ),
    Break(
        "ledger-refund-to-credits",
        ACCOUNT,
        """            source=job["source"],
            amount=job["amount"],
            cause=cause,""",
        """            source="credit",
            amount=job["amount"],
            cause=cause,""",
        (f"{POLICY_TESTS}::test_refund_returns_to_the_source_it_came_from",),
        "a ticket job refunded in credits",
    ),
    Break(
        "lots-paid-before-promotional",
        LOTS,
        '        0 if lot["category"] == Category.PROMOTIONAL else 1,',
        '        1 if lot["category"] == Category.PROMOTIONAL else 0,',
        (f"{LOT_TESTS}::test_a_charge_burns_the_earliest_expiry_then_promotional_then_the_oldest[memory]",),
        "paid lots burnt before promotional ones",
    ),
    Break(
        "lots-never-expiring-first",
        LOTS,
        "        expires is None,\n",
        "        expires is not None,\n",
        (f"{LOT_TESTS}::test_a_charge_burns_the_earliest_expiry_then_promotional_then_the_oldest[memory]",),
        "lots that never expire burnt before expiring ones",
    ),
    Break(
        "lots-expired-still-burnt",
        LOTS,
        'return lot["left"] > 0 and (lot["expires_at"] is None or lot["expires_at"] > at)',
        'return lot["left"] > 0',
        (f"{LOT_TESTS}::test_points_whose_expiry_has_come_do_not_pay_even_before_it_is_recorded[memory]",),
        "a lot whose expiry has come (not yet recorded) still pays: the charge then overdraws",
    ),
    Break(
        "lots-expiry-not-recorded",
        ACCOUNT,
        "        lot_ids = due(self.lots, at)",
        "        lot_ids: list[str] = []",
        (f"{LOT_TESTS}::test_a_lot_expires_with_what_it_has_left_whoever_records_it[memory]",),
        "a lot's expiry never recorded: its points stay in the balance",
    ),
    Break(
        "lots-refund-after-expiry-kept",
        ACCOUNT,
        'if lot is not None and lot["expires_at"] is not None and lot["expires_at"] <= at:',
        "if False:",
        (
            f"{LOT_TESTS}::test_a_reservation_keeps_its_points_across_the_expiry_and_a_refund_after_it_expires_them[memory]",
        ),
        "points refunded to an expired lot stay spendable",
    ),
    Break(
        "store-stale-account",
        STORE,
        "            events = self.app.recorder.select_events(user_id, gt=account.version)",
        "            events = []",
        ("tests/ledger/test_stores_agree.py::test_the_fast_store_decides_as_the_library_does",),
        "the fast store decides on the account in memory without bringing it up to date",
    ),
    Break(
        "store-retry-optimistic",
        STORE,
        "                if attempt == 0 and not self._contended(user_id):",
        "                if True:",
        (f"{STORE_TESTS}::test_a_hot_user_on_two_processes_is_served_with_one_retry_at_most",),
        "a collided command is decided again optimistically (it can collide again, and again)",
    ),
    Break(
        "writer-follows-failed-append",
        WRITER,
        "            if append.blocked():\n"
        "                append.finish(error=_predecessor_failed())\n            else:",
        "            if False:\n                pass\n            else:",
        (f"{WRITER_TESTS}::test_an_append_whose_predecessor_failed_in_an_earlier_batch_is_not_written",),
        "an append written after the one it follows failed (a gap in the stream)",
    ),
)

BREAKS: tuple[Break, ...] = AUDIT_BREAKS + LEDGER_BREAKS


# ------------------------------------------------------------------------------ running
@dataclass(frozen=True)
class Outcome:
    brk: Break
    verdict: str  # killed, survived, error, stale
    seconds: float
    detail: str
    failed: tuple[str, ...] = ()  # the test cases that failed with the break in place
    passed: tuple[str, ...] = ()  # ... and those that passed anyway


def tracked_files(root: Path) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [p for p in listed.split("\0") if p and (root / p).is_file()]


def scratch_copy(root: Path, into: Path) -> None:
    for relative in tracked_files(root):
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, target)


@dataclass(frozen=True)
class Run:
    status: int | None  # pytest's exit status (None: out of time)
    tail: str
    failed: tuple[str, ...]
    passed: tuple[str, ...]


def run_tests(scratch: Path, tests: Sequence[str], timeout: float) -> Run:
    """Run ``tests`` in the scratch copy: every one of them (no ``-x``), so that the report
    says which of them caught the break."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(scratch), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and test ids
            command, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout if isinstance(expired.stdout, str) else (expired.stdout or b"").decode()
        return Run(None, out[-2000:], (), ())
    out = done.stdout + done.stderr
    summary = [line.split(" - ")[0].split(" ", 1) for line in out.splitlines()]
    failed = tuple(w[1] for w in summary if len(w) == 2 and w[0] in ("FAILED", "ERROR"))
    passed = tuple(w[1] for w in summary if len(w) == 2 and w[0] == "PASSED")
    return Run(done.returncode, out[-2000:], failed, passed)


def imports_from(scratch: Path) -> Path:
    """Where the scratch copy's interpreter imports ``projections`` from (must be the copy)."""
    env = {**os.environ, "PYTHONPATH": str(scratch)}
    out = subprocess.run(
        [sys.executable, "-c", "import projections, sys; sys.stdout.write(projections.__file__)"],
        cwd=scratch,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return Path(out).resolve()


def check(breaks: Iterable[Break], timeout: float = TIMEOUT_S, log: bool = True) -> list[Outcome]:
    breaks = list(breaks)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="vto-mutation-") as tmp:
        scratch = Path(tmp) / "repo"
        scratch_copy(ROOT, scratch)
        where = imports_from(scratch)
        if not where.is_relative_to(scratch.resolve()):
            raise SystemExit(f"the scratch copy imports projections from {where}, not from the copy")
        originals = {b.path: (scratch / b.path).read_text() for b in breaks}
        runnable = []
        for b in breaks:
            try:
                b.apply(originals[b.path])
                runnable.append(b)
            except StaleBreak as stale:
                outcomes.append(Outcome(b, "stale", 0.0, str(stale)))
        every_test = sorted({t for b in runnable for t in b.tests})
        if every_test:
            started = time.monotonic()
            baseline = run_tests(scratch, every_test, timeout)
            if log:
                print(
                    f"baseline: {len(baseline.passed)} tests pass, {time.monotonic() - started:.0f} s",
                    flush=True,
                )
            if baseline.status != 0:
                raise SystemExit(
                    f"the named tests fail without any break (exit {baseline.status}):\n{baseline.tail}"
                )
        for b in runnable:
            for path, text in originals.items():
                (scratch / path).write_text(text)
            (scratch / b.path).write_text(b.apply(originals[b.path]))
            started = time.monotonic()
            run = run_tests(scratch, b.tests, timeout)
            seconds = time.monotonic() - started
            tail = run.tail
            if run.status is None:
                verdict = "killed"
                tail = f"out of time after {timeout:.0f} s\n{tail}"
            elif run.status == 1 and run.failed:
                verdict = "killed"
            elif run.status == 0:
                verdict = "survived"
            else:
                verdict = "error"
            outcomes.append(Outcome(b, verdict, seconds, tail, run.failed, run.passed))
            if log:
                caught = f"{len(run.failed)}/{len(run.failed) + len(run.passed)} tests failed"
                print(f"{verdict:9} {b.name} ({caught}, {seconds:.0f} s)", flush=True)
        for path, text in originals.items():
            (scratch / path).write_text(text)
    return outcomes


def chosen(patterns: Sequence[str]) -> list[Break]:
    if not patterns:
        return list(BREAKS)
    picked = [b for b in BREAKS if any(fnmatch.fnmatchcase(b.name, p) for p in patterns)]
    if not picked:
        raise SystemExit(f"no break named {' or '.join(patterns)} (see --list)")
    return picked


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help="break names or shell patterns (default: every break)")
    parser.add_argument("--list", action="store_true", help="list the breaks and their tests")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per break")
    parser.add_argument("-v", "--verbose", action="store_true", help="say which tests caught each break")
    args = parser.parse_args(argv)
    breaks = chosen(args.names)
    if args.list:
        for b in breaks:
            print(f"{b.name}  ({b.path}): {b.why}")
            for test in b.tests:
                print(f"    {test}")
        return 0
    outcomes = check(breaks, args.timeout)
    print()
    for o in outcomes:
        if o.verdict != "killed":
            print(f"--- {o.verdict}: {o.brk.name}: {o.brk.why}\n{o.detail}\n")
    if args.verbose:
        for o in outcomes:
            print(f"{o.brk.name}: {o.verdict}")
            for test in o.failed:
                print(f"    caught by {test}")
            for test in o.passed:
                print(f"    passed    {test}")
    killed = sum(o.verdict == "killed" for o in outcomes)
    print(f"score: {killed}/{len(outcomes)} breaks killed", end="")
    others = {v: sum(o.verdict == v for o in outcomes) for v in ("survived", "error", "stale")}
    print("".join(f", {n} {v}" for v, n in others.items() if n))
    return 0 if killed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
