"""Random ledger histories, generated fast: commands run on ``Account`` aggregates in memory
and are saved in batches of at most ``SAVE_EVENTS`` events (one save of thousands of events
stalls psycopg's pipeline)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from ledger.account import RESERVED, Account
from ledger.application import LedgerApplication
from ledger.errors import LedgerError
from ledger.policy import CREDIT

SAVE_EVENTS = 400
START = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def _outputs(rng: random.Random, kind: str) -> list[dict[str, Any]]:
    media = "video/mp4" if kind == "video" else "image/png"
    return [
        {"storage_key": f"outputs/{uuid4()}.{media[6:]}", "media_type": media, "width": 768, "height": 1024}
        for _ in range(rng.randint(1, 2))
    ]


def random_history(
    app: LedgerApplication, *, users: int, events: int, seed: int = 0, projects: int = 5
) -> list[UUID]:
    """Append about ``events`` events (at least) over ``users`` new accounts; returns the users."""
    rng = random.Random(seed)
    at = START
    project_ids = [str(uuid4()) for _ in range(projects)]
    accounts = [Account.open(uuid4(), at) for _ in range(users)]
    for start in range(0, len(accounts), SAVE_EVENTS):  # large saves stall psycopg's pipeline
        app.save(*accounts[start : start + SAVE_EVENTS])
    dirty: dict[UUID, Account] = {}
    pending = 0
    written = len(accounts)

    def flush() -> None:
        nonlocal pending, written
        if dirty:
            app.save(*dirty.values())
        written += pending
        dirty.clear()
        pending = 0

    while written + pending < events:
        account = rng.choice(accounts)
        at += timedelta(seconds=rng.randint(1, 600))
        before = len(account.pending_events)
        _act(account, rng, at, app, project_ids)
        added = len(account.pending_events) - before
        if added:
            dirty[account.id] = account
            pending += added
        if pending >= SAVE_EVENTS - 10:
            flush()
    flush()
    return [a.id for a in accounts]


def _act(
    account: Account, rng: random.Random, at: datetime, app: LedgerApplication, projects: list[str]
) -> None:
    op = rng.random()
    open_jobs = [UUID(j) for j, rec in account.jobs.items() if rec["status"] == RESERVED]
    try:
        if op < 0.15:
            account.grant_credits(rng.randint(1, 20), "grant", at)
        elif op < 0.20:
            account.grant_tickets(rng.choice(["lookbook", "video"]), rng.randint(1, 3), "grant", at)
        elif op < 0.23:
            quota = rng.choice([None, 1, 2, 3])
            account.activate_subscription("pro", at + timedelta(days=rng.randint(1, 10)), quota, "plan", at)
        elif op < 0.24:
            account.cancel_subscription("user", at)
        elif op < 0.25:
            account.expire_subscription(at)
        elif op < 0.55:
            kind = "video" if rng.random() < 0.3 else "image"
            request = {"project_id": rng.choice(projects), "product_ids": [str(uuid4())]}
            key = f"k{rng.randint(0, 50)}" if rng.random() < 0.2 else None
            account.request_job(uuid4(), kind, request, app.policy, at, key, app.options.key_ttl)
        elif op < 0.75 and open_jobs:
            job = rng.choice(open_jobs)
            account.complete_job(job, _outputs(rng, account.jobs[str(job)]["kind"]), at)
        elif op < 0.83 and open_jobs:
            account.fail_job(rng.choice(open_jobs), {"code": "generator_error", "message": "boom"}, at)
        elif op < 0.88 and open_jobs:
            account.cancel_job(rng.choice(open_jobs), "user", at)
        elif op < 0.91 and account.jobs:
            job_id = UUID(rng.choice(list(account.jobs)))
            if not account.jobs[str(job_id)]["refunded"]:
                account.admin_refund(job_id, "admin", "ops@example.com", at)
        elif op < 0.94:
            account.adjust(CREDIT, rng.choice([-3, -1, 2, 5]), "correction", "ops@example.com", at)
        elif op < 0.97:
            account.expire_reservations(at - timedelta(minutes=30), at)
        elif open_jobs or account.jobs:
            # a late success after the sweeper's refund: delivered free
            expired = [UUID(j) for j, rec in account.jobs.items() if rec["status"] == "expired"]
            if expired:
                job = rng.choice(expired)
                account.complete_job(job, _outputs(rng, account.jobs[str(job)]["kind"]), at)
    except LedgerError:
        pass
