"""Failed-login throttling: per account and per client address, counted in PostgreSQL so every
API replica sees the same counters; 429 with Retry-After, the password is then not checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from infra.settings import Settings
from tests.auth_helpers import PASSWORD, is_problem, login, register, wide

WRONG = "not the password"


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path / "data",
        login_max_failures_per_account=5,
        login_max_failures_per_address=12,
        login_window_s=900,
    )


def throttled(response: Any, window_s: int = 900) -> None:
    body = is_problem(response, 429, "too_many_login_attempts")
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= window_s and body["retry_after"] == retry_after


def end_windows(services: Any) -> None:
    """Move every counter's window into the past (as if the window had elapsed)."""
    with services.engine.begin() as conn:
        conn.execute(text("UPDATE login_throttle SET window_start = window_start - interval '1 hour'"))


def test_failed_logins_are_throttled_per_account_across_replicas(
    client: Any, replica: TestClient, services: Any
) -> None:
    register(client, "victim@example.com")
    for attempt in range(5):  # alternate replicas: they share one counter
        is_problem(login(client if attempt % 2 else replica, "victim@example.com", WRONG), 401)
    # The sixth attempt is refused on either replica, even with the right password.
    throttled(login(client, "victim@example.com", PASSWORD))
    throttled(login(replica, "Victim@Example.com", PASSWORD))
    # Another account from the same address is not locked by the account's limit.
    register(client, "other@example.com")
    assert login(replica, "other@example.com").status_code == 200
    end_windows(services)
    assert login(replica, "victim@example.com").status_code == 200


def test_a_success_clears_the_account_counter(client: Any, services: Any) -> None:
    register(client, "seller@example.com")
    for _ in range(4):
        is_problem(login(client, "seller@example.com", WRONG), 401)
    assert login(client, "seller@example.com").status_code == 200
    for _ in range(5):
        is_problem(login(client, "seller@example.com", WRONG), 401)
    throttled(login(client, "seller@example.com"))
    with services.engine.connect() as conn:
        rows = conn.execute(text("SELECT kind, failures FROM login_throttle ORDER BY kind")).all()
    assert [tuple(r) for r in rows] == [("account", 6), ("address", 10)]  # the success took its own back


def test_failed_logins_are_throttled_per_client_address(client: Any, replica: TestClient) -> None:
    register(client, "seller@example.com")
    for _ in range(20):  # successes do not use up the address's budget
        assert login(client, "seller@example.com").status_code == 200
    for n in range(12):  # spraying one password over many accounts, from one address
        is_problem(login(client if n % 2 else replica, f"user{n}@example.com", WRONG), 401)
    throttled(login(replica, "user99@example.com", WRONG))
    throttled(login(client, "seller@example.com"))  # every account, from this address


def test_unknown_emails_are_counted_like_accounts(client: Any) -> None:
    """No account enumeration: an email nobody registered is throttled the same way."""
    for _ in range(5):
        is_problem(login(client, "nobody@example.com", WRONG), 401)
    throttled(login(client, "nobody@example.com", WRONG))


def test_look_alike_spellings_of_an_address_share_its_counter(client: Any) -> None:
    """The account counter is keyed by the canonical address: full-width, upper-case or IDNA
    spellings of one address get no guesses of their own."""
    register(client, "victim@bücher.example")
    for typed in [
        "VICTIM@bücher.example",
        f"{wide('v')}ictim@bücher.example",
        "victim@xn--bcher-kva.example",
        f"victim{wide('@')}BÜCHER.example",
        " victim@bücher.example ",
    ]:
        is_problem(login(client, typed, WRONG), 401)
    throttled(login(client, "victim@bücher.example"))
