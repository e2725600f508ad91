"""``vto points grant``: credits and tickets granted from the server's command line, as lots
with a category and an optional expiry (as ``POST /admin/grants`` grants them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api_factories import make_user


def lots(services: Any, user_id: Any) -> list[tuple[Any, ...]]:
    """The user's lots in the ledger, oldest first: (source, category, expires_at, amount, left)."""
    held = services.ledger.account(user_id).lots
    return [
        (lot["source"], lot["category"], lot["expires_at"], lot["amount"], lot["left"])
        for _, lot in sorted(held.items(), key=lambda item: int(item[0]))
    ]


def test_grant_credits_and_tickets_as_lots(vto: Any, client: Any, services: Any) -> None:
    seller = make_user(services)
    done = vto(
        "points", "grant", seller.user.email.upper(), "--credits", "40", "--category", "promotional",
        "--expires-in-days", "10", "--reason", "launch",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    [(source, category, expires_at, amount, left)] = lots(services, seller.id)
    assert (source, category, amount, left) == ("credit", "promotional", 40, 40)
    assert timedelta(days=10) - timedelta(minutes=1) < expires_at - datetime.now(UTC) <= timedelta(days=10)
    assert done.stdout == (
        f"granted 40 credits (promotional, expiring {expires_at.isoformat()}) "
        f"to {seller.user.email} ({seller.id})\n"
    )

    at = "2030-01-02T03:04:05+09:00"
    both = vto(
        "points", "grant", seller.user.email, "--credits", "5", "--ticket", "lookbook=2", "--ticket",
        "video=1", "--expires-at", at, "--reason", "bundle",
    )  # fmt: skip
    assert both.exit_code == 0, both.output
    when = datetime.fromisoformat(at)
    assert lots(services, seller.id) == [
        ("credit", "promotional", expires_at, 40, 40),
        ("credit", "paid", when, 5, 5),
        ("ticket:lookbook", "paid", when, 2, 2),
        ("ticket:video", "paid", when, 1, 1),
    ]
    assert "granted 5 credits and 2 lookbook tickets and 1 video tickets (paid, expiring" in both.stdout
    forever = vto("points", "grant", seller.user.email, "--credits", "1", "--reason", "r")
    assert forever.exit_code == 0, forever.output
    assert "(paid, never expiring)" in forever.stdout
    assert lots(services, seller.id)[-1] == ("credit", "paid", None, 1, 1)
    # GET /points shows them, the grant's event recorded who granted it
    services.wait_for(services.ledger.position())
    body = client.get("/api/v1/points", headers=seller.headers).json()
    assert [(lot["left"], lot["category"]) for lot in body["lots"]["credit"]] == [
        (40, "promotional"),
        (5, "paid"),
        (1, "paid"),
    ]
    assert body["expiring_within_7_days"] == {"credit": 0, "ticket:lookbook": 0, "ticket:video": 0}


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--credits", "5", "--expires-at", "2020-01-01T00:00:00+00:00"], "expires_at must be in the future"),
        (["--credits", "5", "--expires-at", "2030-01-01T00:00:00"], "expires_at: Input should have timezone"),
        (["--credits", "5", "--expires-at", "soon"], "expires_at: Input should be a valid datetime"),
        (["--credits", "5", "--category", "free"], "category: Input should be 'paid' or 'promotional'"),
        (["--ticket", "lookbook"], "--ticket takes TYPE=COUNT, not 'lookbook'"),
        (["--ticket", "poster=1"], "unknown ticket type"),
        (["--credits", "0"], "grant credits, tickets or a subscription"),
        (
            ["--credits", "5", "--expires-at", "2030-01-01T00:00:00Z", "--expires-in-days", "3"],
            "give --expires-at or --expires-in-days, not both",
        ),
    ],
)
def test_bad_input_is_refused_and_grants_nothing(
    vto: Any, services: Any, args: list[str], error: str
) -> None:
    seller = make_user(services)
    before = services.ledger.position()
    refused = vto("points", "grant", seller.user.email, "--reason", "r", *args)
    assert refused.exit_code == 1, refused.output
    assert error in refused.stderr
    assert refused.stdout == ""
    assert services.ledger.position() == before


def test_an_unknown_email_is_refused(vto: Any, services: Any) -> None:
    refused = vto("points", "grant", "nobody@example.com", "--credits", "1", "--reason", "r")
    assert (refused.exit_code, refused.stderr) == (
        1,
        "error: no live account has the email 'nobody@example.com'\n",
    )
