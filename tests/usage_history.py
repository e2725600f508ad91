"""A small history of two sellers whose usage report is known (tests of /admin/usage and of
``vto ledger report``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from tests.api_factories import make_user
from tests.factories import job_request


@dataclass
class History:
    start: datetime
    end: datetime
    seller: UUID
    other: UUID


def usage_history(services: Any) -> History:
    """seller: 50 paid + 20 promotional credits, 2 lookbook tickets; a ticket job and a credit
    job charged, the credit job failed and refunded, -3 adjusted, 4 promotional credits
    expired. other: 10 paid credits, one credit job succeeded."""
    ledger = services.ledger
    seller, other = make_user(services).id, make_user(services).id
    start = datetime.now(UTC)
    ledger.grant(seller, "welcome", credits=50, tickets={"lookbook": 2})
    expires = datetime.now(UTC) + timedelta(milliseconds=200)
    ledger.grant_credits(seller, 4, "trial", expires_at=expires, category="promotional")
    ledger.grant_credits(seller, 20, "promo", category="promotional")
    ledger.request_job(seller, uuid4(), "image", job_request())  # a lookbook ticket
    deadline = time.monotonic() + 10
    while datetime.now(UTC) <= expires and time.monotonic() < deadline:  # the expiry's time to come
        time.sleep(0.01)
    assert ledger.expire_lots([seller]).value == {seller: 1}
    ledger.adjust(seller, "credit", -3, "correction")
    job = uuid4()
    ledger.request_job(seller, job, "video", job_request())  # credits (no video ticket)
    ledger.fail_job(seller, job, {"code": "boom", "message": "boom", "retryable": False})
    ledger.grant_credits(other, 10, "welcome")
    done = uuid4()
    ledger.request_job(other, done, "image", job_request())
    result = ledger.complete_job(other, done, [])
    services.wait_for(result.position)
    return History(start, datetime.now(UTC), seller, other)


def expected_rows(h: History, services: Any) -> dict[tuple[str, str], dict[str, int]]:
    """The report by user: (user id, source) -> its sums."""
    video = services.settings.credit_costs["video"]
    image = services.settings.credit_costs["image"]
    zero = {
        "charged": 0,
        "refunded": 0,
        "expired": 0,
        "adjusted": 0,
        "granted_paid": 0,
        "granted_promotional": 0,
        "settled_jobs": 0,
    }
    return {
        (str(h.seller), "credit"): zero
        | {"charged": video, "refunded": video, "expired": 4, "adjusted": -3, "granted_paid": 50}
        | {"granted_promotional": 24},
        (str(h.seller), "ticket:lookbook"): zero | {"charged": 1, "granted_paid": 2},
        (str(h.other), "credit"): zero | {"charged": image, "granted_paid": 10, "settled_jobs": 1},
    }
