"""Password throttling: per account and per client address, counted in PostgreSQL so every
API replica sees the same counters; 429 with Retry-After. Every password check counts (login,
email change, password change, account deletion). An account over its limit is refused without
checking the password; an address over its limit gets 429 for every failure, but a live
account's correct password still signs in (other accounts' failures cannot lock it out). The
client address is the TCP peer, or what ``VTO_TRUSTED_PROXIES`` forward."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from command_api.app import create_app
from command_api.serve import http_config
from command_api.services import build_services
from command_api.users.models import MailToken
from infra.settings import Settings
from tests.auth_helpers import API, PASSWORD, bearer, is_problem, login, register, wide
from tests.mail_fixtures import free_port

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
        query = "SELECT kind, failures FROM login_throttle WHERE kind <> 'register' ORDER BY kind"
        rows = conn.execute(text(query)).all()
    assert [tuple(r) for r in rows] == [("account", 6), ("address", 10)]  # the success took its own back


def test_failed_logins_are_throttled_per_client_address(client: Any, replica: TestClient) -> None:
    register(client, "seller@example.com")
    for _ in range(20):  # successes do not use up the address's budget
        assert login(client, "seller@example.com").status_code == 200
    for n in range(12):  # spraying one password over many accounts, from one address
        is_problem(login(client if n % 2 else replica, f"user{n}@example.com", WRONG), 401)
    throttled(login(replica, "user99@example.com", WRONG))
    # From this address every failure is a 429, whether or not the account exists (the answer
    # tells nothing about which emails have accounts) ...
    register(client, "other@example.com")
    throttled(login(client, "other@example.com", WRONG))
    # ... but an account's correct password signs in: others' failures do not lock it out.
    assert login(client, "seller@example.com").status_code == 200


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


def test_other_accounts_failures_from_an_address_do_not_refuse_an_owners_password(
    client: Any, services: Any
) -> None:
    """Attack 5: 34 failed logins with made-up emails from one address, then the real owner's
    correct password from the same address: it was refused (429 for the rest of the window)."""
    register(client, "owner@example.com")
    for n in range(34):
        response = login(client, f"made-up-{n}@example.com", WRONG)
        assert response.status_code in (401, 429)
    throttled(login(client, "made-up-99@example.com", WRONG))
    signed_in = login(client, "owner@example.com")
    assert signed_in.status_code == 200, signed_in.text
    # The owner's own account counter still holds: five wrong guesses lock it, whatever address.
    for _ in range(5):
        throttled(login(client, "owner@example.com", WRONG))  # 429: this address is over its limit
    throttled(login(client, "owner@example.com"))
    with services.engine.connect() as conn:
        failures = conn.execute(
            text("SELECT failures FROM login_throttle WHERE kind = 'account' AND key = 'owner@example.com'")
        ).scalar_one()
    assert failures == 6


def test_every_password_check_shares_the_account_counter(client: Any, services: Any) -> None:
    """Attack 2: with a stolen access token, guess the password on POST /users/me/email and
    /users/me/password (and DELETE /users/me): 60 wrong guesses got no 429, and the right one
    moved the account's email to the attacker's inbox."""
    register(client, "victim@example.com")
    stolen = bearer(login(client, "victim@example.com").json()["access_token"])
    guesses = [
        ("post", "/users/me/email", {"email": "thief@example.com", "password": WRONG}),
        ("post", "/users/me/password", {"current_password": WRONG, "new_password": "thief's password"}),
        ("delete", "/users/me", {"password": WRONG}),
        ("post", "/users/me/email", {"email": "thief@example.com", "password": WRONG}),
    ]
    for method, path, body in guesses:
        is_problem(client.request(method, f"{API}{path}", json=body, headers=stolen), 403, "wrong_password")
    is_problem(login(client, "victim@example.com", WRONG), 401)  # the fifth guess
    for method, path, body in guesses:  # refused now, the right password too
        right = {k: PASSWORD if k in ("password", "current_password") else v for k, v in body.items()}
        throttled(client.request(method, f"{API}{path}", json=right, headers=stolen))
    throttled(login(client, "victim@example.com"))
    me = client.get(f"{API}/users/me", headers=stolen).json()
    assert me["email"] == "victim@example.com"
    with services.sessions() as session:
        assert session.scalars(select(MailToken).where(MailToken.purpose == "change_email")).all() == []
    # The window ends: the right password works again (and clears the counter).
    end_windows(services)
    changed = client.post(
        f"{API}/users/me/email", json={"email": "new@example.com", "password": PASSWORD}, headers=stolen
    )
    assert changed.status_code == 202, changed.text


def _app_at(settings: Settings, pg_url: str, peer: str) -> Iterator[TestClient]:
    """An API replica whose TCP peer (the client, or the proxy in front) is ``peer``."""
    built = build_services(settings, pg_url, migrate=False, run_projections=False)
    try:
        with TestClient(create_app(built), client=(peer, 40000)) as test_client:
            yield test_client
    finally:
        built.close()


def address_counters(services: Any) -> dict[str, int]:
    with services.engine.connect() as conn:
        rows = conn.execute(text("SELECT key, failures FROM login_throttle WHERE kind = 'address'")).all()
    return {key: failures for key, failures in rows}


def test_forwarded_for_is_believed_only_from_trusted_proxies(
    api_settings: Settings, pg_url: str, services: Any
) -> None:
    """Attack 5: failures sent with a different X-Forwarded-For each were never throttled.
    By default (no VTO_TRUSTED_PROXIES) the header is ignored: the TCP peer is the client."""
    for peer in _app_at(api_settings, pg_url, "198.51.100.20"):
        for n in range(12):
            forwarded = {"X-Forwarded-For": f"203.0.113.{n}"}
            body = {"email": f"nobody{n}@example.com", "password": WRONG}
            is_problem(peer.post(f"{API}/auth/login", json=body, headers=forwarded), 401)
        rotated = {"X-Forwarded-For": "203.0.113.200"}
        throttled(
            peer.post(
                f"{API}/auth/login", json={"email": "x@example.com", "password": WRONG}, headers=rotated
            )
        )
    assert address_counters(services) == {"198.51.100.20": 13}

    trusting = api_settings.model_copy(update={"trusted_proxies": ("10.0.0.0/24", "192.0.2.1")})
    for proxy in _app_at(trusting, pg_url, "10.0.0.5"):
        body = {"email": "nobody@example.com", "password": WRONG}
        for chain in ["203.0.113.7", "203.0.113.8, 192.0.2.1", "spoofed, 203.0.113.9"]:
            is_problem(proxy.post(f"{API}/auth/login", json=body, headers={"X-Forwarded-For": chain}), 401)
    for stranger in _app_at(trusting, pg_url, "198.51.100.30"):  # not a trusted proxy
        body = {"email": "nobody@example.com", "password": WRONG}
        forwarded = {"X-Forwarded-For": "203.0.113.10"}
        is_problem(stranger.post(f"{API}/auth/login", json=body, headers=forwarded), 401)
    counters = address_counters(services)
    assert {key: counters[key] for key in counters if key != "198.51.100.20"} == {
        "203.0.113.7": 1,
        "203.0.113.8": 1,
        "203.0.113.9": 1,
        "198.51.100.30": 1,
    }


def test_a_local_client_cannot_choose_its_address_with_forwarded_for(client: Any, services: Any) -> None:
    """Attack 5, over real HTTP: uvicorn believed X-Forwarded-For from 127.0.0.1 by default, so
    a client on the same host (or a proxy that passes the header through) rotated its address
    at will. ``vto serve`` and ``vto api`` serve with ``http_config``: only VTO_TRUSTED_PROXIES
    are believed (none by default)."""
    port = free_port()
    server = uvicorn.Server(http_config(client.app, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            answers = [
                http.post(
                    f"{API}/auth/login",
                    json={"email": f"nobody{n}@example.com", "password": WRONG},
                    headers={"X-Forwarded-For": f"203.0.113.{n}"},
                ).status_code
                for n in range(13)
            ]
    finally:
        server.should_exit = True
        thread.join(30)
    assert answers == [401] * 12 + [429]
    assert address_counters(services) == {"127.0.0.1": 13}
