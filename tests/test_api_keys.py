"""API keys for servers through HTTP: the lifecycle (shown once, listed without the secret,
revoked at once on every replica), what a key may not do (403 api_key_not_allowed), the
job-order rate limits per key and per account with an injected clock across two replicas,
the cap per account and bad input."""

from __future__ import annotations

import hashlib
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from infra.settings import Settings
from tests.api_factories import Caller, make_user
from tests.conftest import FakeClock
from tests.test_vto import catalog, job_body

API = "/api/v1"
KEY = re.compile(r"^vto_sk_[A-Za-z0-9_-]{43}$")
KEY_RATE, ACCOUNT_RATE, CAP = 3, 5, 3


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        api_key_jobs_per_minute=KEY_RATE,
        api_account_jobs_per_minute=ACCOUNT_RATE,
        api_key_max_per_account=CAP,
        api_key_last_used_interval_s=60,
    )


def seller(services: Any, credits: int = 100) -> Caller:
    caller = make_user(services)
    services.ledger.grant(caller.id, "test", credits=credits)
    return caller


def new_key(client: Any, caller: Caller, name: str = "shop server") -> tuple[Caller, dict[str, Any]]:
    """A key of ``caller`` (made with their token) and the creation's body."""
    response = client.post(f"{API}/api-keys", json={"name": name}, headers=caller.headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return Caller(caller.user, body["key"]), body


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def stored_keys(services: Any) -> list[dict[str, Any]]:
    with services.engine.connect() as conn:
        return [dict(row) for row in conn.execute(text("SELECT * FROM api_keys")).mappings()]


# --- lifecycle ------------------------------------------------------------------------------


def test_a_key_is_shown_once_and_stored_only_as_its_hash(client: Any, services: Any) -> None:
    caller = seller(services)
    response = client.post(f"{API}/api-keys", json={"name": "  shop server  "}, headers=caller.headers)
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    created = response.json()
    key = created["key"]
    assert KEY.fullmatch(key)
    assert created["name"] == "shop server"
    assert created["prefix"] == key[:12]
    assert created["last_used_at"] is None

    listed = client.get(f"{API}/api-keys", headers=caller.headers)
    assert listed.status_code == 200
    assert listed.json() == [{k: v for k, v in created.items() if k != "key"}]
    assert key not in listed.text

    (row,) = stored_keys(services)
    assert bytes(row["key_hash"]) == hashlib.sha256(key.encode()).digest()
    assert key not in repr(row)  # no column holds the key
    # Two keys are never the same.
    _, second = new_key(client, caller, "other")
    assert second["key"] != key
    assert [k["name"] for k in client.get(f"{API}/api-keys", headers=caller.headers).json()] == [
        "other",
        "shop server",
    ]


def test_a_key_works_on_the_seller_routes(client: Any, services: Any) -> None:
    caller = seller(services)
    key, _ = new_key(client, caller)
    me = client.get(f"{API}/users/me", headers=key.headers)
    assert me.status_code == 200 and me.json()["id"] == str(caller.id)
    renamed = client.patch(f"{API}/users/me", json={"name": "Shop"}, headers=key.headers)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Shop"
    items = catalog(client, key)  # collections, projects, product and asset uploads
    assert client.get(f"{API}/points", headers=key.headers).json()["credit"] == 100
    order = client.post(f"{API}/vto/jobs", json=job_body(items), headers=key.headers)
    assert order.status_code == 202, order.text
    job_id = order.json()["id"]
    assert client.get(f"{API}/vto/jobs/{job_id}", headers=key.headers).status_code == 200
    listed = client.get(f"{API}/vto/jobs", headers=key.headers)
    assert [j["id"] for j in listed.json()["items"]] == [job_id]
    # The same job under the account's token: a key acts as its account.
    assert client.get(f"{API}/vto/jobs/{job_id}", headers=caller.headers).status_code == 200
    assert (
        client.get(f"{API}/webhooks/default/secret", headers=key.headers).json()["key"].startswith("whsec_")
    )
    results = client.get(f"{API}/vto/projects/{items['project_id']}/results", headers=key.headers)
    assert results.status_code == 200
    cancel = client.post(f"{API}/vto/jobs/{job_id}/cancel", headers=key.headers)
    assert cancel.status_code in (200, 409), cancel.text  # canceled, or already finished


def test_last_used_is_written_at_most_every_interval(client: Any, services: Any, clock: FakeClock) -> None:
    services.clock = clock
    caller = seller(services)
    key, _ = new_key(client, caller)

    def last_used() -> datetime | None:
        (found,) = client.get(f"{API}/api-keys", headers=caller.headers).json()
        value = found["last_used_at"]
        return None if value is None else datetime.fromisoformat(value)

    assert last_used() is None
    first = clock.now
    assert client.get(f"{API}/users/me", headers=key.headers).status_code == 200
    assert last_used() == first
    clock.advance(seconds=59)
    assert client.get(f"{API}/points", headers=key.headers).status_code == 200
    assert last_used() == first  # not again within 60 s
    later = clock.advance(seconds=1)
    assert client.get(f"{API}/vto/jobs", headers=key.headers).status_code == 200
    assert last_used() == later


def test_a_revoked_key_stops_at_once_on_every_replica(client: Any, replica: Any, services: Any) -> None:
    caller, other = seller(services), seller(services)
    key, created = new_key(client, caller)
    kept, _ = new_key(client, caller, "kept")
    routes = [f"{API}/users/me", f"{API}/points", f"{API}/vto/jobs"]  # each way a caller is checked
    for app in (client, replica):
        for route in routes:
            assert app.get(route, headers=key.headers).status_code == 200, route

    # Another account cannot revoke it (nor learn that it exists).
    problem(client.delete(f"{API}/api-keys/{created['id']}", headers=other.headers), 404, "not_found")
    assert replica.get(f"{API}/users/me", headers=key.headers).status_code == 200

    revoked = replica.delete(f"{API}/api-keys/{created['id']}", headers=caller.headers)
    assert revoked.status_code == 204
    for app in (client, replica):  # no wait: the next request already fails
        for route in routes:
            body = problem(app.get(route, headers=key.headers), 401, "unauthorized")
            assert "revoked" in body["detail"]
    assert client.get(f"{API}/users/me", headers=kept.headers).status_code == 200  # the others stay
    problem(client.delete(f"{API}/api-keys/{created['id']}", headers=caller.headers), 404, "not_found")
    assert [k["name"] for k in replica.get(f"{API}/api-keys", headers=caller.headers).json()] == ["kept"]


def test_a_deleted_accounts_keys_stop(client: Any, services: Any) -> None:
    caller = make_user(services, password="correct horse battery staple", sign_in="password")
    key, _ = new_key(client, caller)
    deleted = client.request(
        "DELETE", f"{API}/users/me", json={"password": "correct horse battery staple"}, headers=caller.headers
    )
    assert deleted.status_code == 204, deleted.text
    problem(client.get(f"{API}/users/me", headers=key.headers), 401, "unauthorized")
    problem(client.get(f"{API}/points", headers=key.headers), 401, "unauthorized")


# --- what a key may not do ------------------------------------------------------------------

FORBIDDEN = [
    ("POST", "/api-keys", {"name": "another"}),
    ("GET", "/api-keys", None),
    ("DELETE", "/api-keys/{key_id}", None),
    ("POST", "/users/me/password", {"current_password": "x" * 12, "new_password": "y" * 16}),
    ("POST", "/users/me/email", {"email": "new@example.com", "password": "x" * 12}),
    ("DELETE", "/users/me", {"password": "x" * 12}),
    ("GET", "/users/me/sessions", None),
    ("DELETE", "/users/me/sessions/{random}", None),
    ("POST", "/auth/logout", None),
    ("POST", "/auth/verify-email", {"token": "x" * 32}),
    ("POST", "/auth/verify-email/resend", None),
    ("POST", "/webhooks/default/secret/rotate", None),
    ("POST", "/admin/grants", {"email": "someone@example.com", "credits": 5, "reason": "test"}),
    ("POST", "/points/refund", {"job_id": "{random}", "reason": "test"}),
]


@pytest.mark.parametrize(("method", "path", "body"), FORBIDDEN, ids=[f"{m} {p}" for m, p, _ in FORBIDDEN])
def test_a_key_may_not_manage_the_account(
    client: Any, services: Any, method: str, path: str, body: dict[str, Any] | None
) -> None:
    caller = make_user(services, admin=True)  # an admin: the admin routes refuse the key, not the role
    key, created = new_key(client, caller)
    fill = {"{key_id}": created["id"], "{random}": str(uuid.uuid4())}
    for name, value in fill.items():
        path = path.replace(name, value)
        if body is not None:
            body = {k: v.replace(name, value) if isinstance(v, str) else v for k, v in body.items()}
    before = [(k["id"], k["name"], k["key_hash"]) for k in stored_keys(services)]
    response = client.request(method, f"{API}{path}", json=body, headers=key.headers)
    answer = problem(response, 403, "api_key_not_allowed")
    assert "access token" in answer["detail"]
    assert [(k["id"], k["name"], k["key_hash"]) for k in stored_keys(services)] == before  # unchanged
    # An unknown key on the same route is 401, not 403: the key is checked first.
    unknown = Caller(caller.user, "vto_sk_" + "A" * 43)
    problem(client.request(method, f"{API}{path}", json=body, headers=unknown.headers), 401, "unauthorized")


# --- rate limits ----------------------------------------------------------------------------


def order(app: Any, who: Caller, items: dict[str, str]) -> Any:
    return app.post(f"{API}/vto/jobs", json=job_body(items), headers=who.headers)


def bucket_tat(services: Any, bucket: str) -> float | None:
    with services.engine.connect() as conn:
        found = conn.execute(
            text("SELECT tat FROM api_rate_limits WHERE bucket = :b"), {"b": bucket}
        ).scalar()
    return None if found is None else float(found)


def jobs_of(client: Any, caller: Caller) -> int:
    return len(client.get(f"{API}/vto/jobs", headers=caller.headers, params={"limit": 100}).json()["items"])


def test_a_key_orders_at_its_rate_across_replicas(
    client: Any, replica: Any, services: Any, clock: FakeClock
) -> None:
    services.clock = replica.app.state.services.clock = clock
    caller = seller(services)
    items = catalog(client, caller)
    key, _ = new_key(client, caller)
    apps = [client, replica]
    for n in range(KEY_RATE):  # a burst of the rate, half on each replica
        assert order(apps[n % 2], key, items).status_code == 202
    for app in apps:
        refused = app.post(f"{API}/vto/jobs", json=job_body(items), headers=key.headers)
        body = problem(refused, 429, "job_rate_limited")
        assert refused.headers["Retry-After"] == str(60 // KEY_RATE) == "20"
        assert body["scope"] == "key" and body["retry_after"] == 20
    clock.advance(seconds=19)
    assert (
        replica.post(f"{API}/vto/jobs", json=job_body(items), headers=key.headers).headers["Retry-After"]
        == "1"
    )
    clock.advance(seconds=1)
    assert order(replica, key, items).status_code == 202  # one more every 20 s
    problem(order(client, key, items), 429, "job_rate_limited")
    # The account's token is not limited; refused orders made no job.
    for _ in range(2):
        assert order(client, caller, items).status_code == 202
    assert jobs_of(client, caller) == KEY_RATE + 1 + 2


def test_an_accounts_keys_share_its_rate(client: Any, replica: Any, services: Any, clock: FakeClock) -> None:
    services.clock = replica.app.state.services.clock = clock
    caller, other = seller(services), seller(services)
    items, other_items = catalog(client, caller), catalog(client, other)
    first, _ = new_key(client, caller, "first")
    second, second_created = new_key(client, caller, "second")
    third, _ = new_key(client, caller, "third")
    for _ in range(KEY_RATE):
        assert order(client, first, items).status_code == 202
    for _ in range(ACCOUNT_RATE - KEY_RATE):
        assert order(replica, second, items).status_code == 202
    # The account's 5 are used: the second key (2 of its 3 used) and the third are refused.
    for app, key in ((client, second), (replica, third)):
        refused = order(app, key, items)
        body = problem(refused, 429, "job_rate_limited")
        assert body["scope"] == "account"
        assert refused.headers["Retry-After"] == str(60 // ACCOUNT_RATE) == "12"
    # A refusal by the account leaves the key's own bucket as it was (2 orders of 20 s each).
    start = clock.now.timestamp()
    assert bucket_tat(services, f"key:{second_created['id']}") == pytest.approx(start + 40, abs=1e-3)
    # Another account's key is not affected.
    other_key, _ = new_key(client, other)
    assert order(replica, other_key, other_items).status_code == 202
    clock.advance(seconds=12)
    assert order(replica, third, items).status_code == 202
    problem(order(client, second, items), 429, "job_rate_limited")
    assert jobs_of(client, caller) == ACCOUNT_RATE + 1


def test_concurrent_orders_on_two_replicas_pass_exactly_the_rate(
    client: Any, replica: Any, services: Any, clock: FakeClock
) -> None:
    services.clock = replica.app.state.services.clock = clock  # frozen: no refill meanwhile
    caller = seller(services)
    items = catalog(client, caller)
    keys = [new_key(client, caller, f"key {n}")[0] for n in range(2)]

    def attempt(n: int) -> tuple[int, str]:
        response = order((client, replica)[n % 2], keys[n // 2 % 2], items)
        return response.status_code, response.json().get("scope", "")

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(attempt, range(12)))
    assert sorted(status for status, _ in answers) == [202] * ACCOUNT_RATE + [429] * (12 - ACCOUNT_RATE)
    assert jobs_of(client, caller) == ACCOUNT_RATE
    # The account's bucket holds exactly 5 orders of 12 s: no refusal left a trace.
    assert bucket_tat(services, f"account:{caller.id}") == pytest.approx(clock.now.timestamp() + 60, abs=1e-3)


# --- the cap and bad input ------------------------------------------------------------------


def test_an_account_holds_at_most_the_cap_of_keys(client: Any, services: Any) -> None:
    caller = seller(services)
    made = [new_key(client, caller, f"key {n}")[1] for n in range(CAP)]
    body = problem(
        client.post(f"{API}/api-keys", json={"name": "one more"}, headers=caller.headers),
        409,
        "too_many_api_keys",
    )
    assert body["limit"] == CAP
    assert len(stored_keys(services)) == CAP
    assert client.delete(f"{API}/api-keys/{made[0]['id']}", headers=caller.headers).status_code == 204
    new_key(client, caller, "one more")
    # The cap is per account.
    new_key(client, seller(services), "elsewhere")


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"name": "line\nbreak"},
        {"name": "bell\x07"},
        {"name": 42},
        {},
        {"name": "ok", "scopes": ["all"]},
    ],
    ids=["empty", "blank", "too-long", "newline", "control", "not-text", "missing", "extra-field"],
)
def test_a_bad_name_is_422_and_makes_nothing(client: Any, services: Any, body: dict[str, Any]) -> None:
    caller = seller(services)
    problem(client.post(f"{API}/api-keys", json=body, headers=caller.headers), 422, "validation_error")
    assert stored_keys(services) == []


def test_the_longest_name_is_taken(client: Any, services: Any) -> None:
    _, created = new_key(client, seller(services), "ü" * 100)
    assert created["name"] == "ü" * 100


@pytest.mark.parametrize(
    "credential",
    [
        "vto_sk_",
        "vto_sk_short",
        "vto_sk_" + "!" * 43,
        "vto_sk_" + "A" * 44,
        "vto_sk_" + "A" * 43,  # well formed, unknown
    ],
    ids=["prefix-only", "short", "bad-characters", "too-long", "unknown"],
)
def test_a_malformed_or_unknown_key_is_401(client: Any, services: Any, credential: str) -> None:
    seller(services)
    headers = {"Authorization": f"Bearer {credential}"}
    for method, path in (
        ("GET", "/users/me"),
        ("GET", "/points"),
        ("GET", "/vto/jobs"),
        ("GET", f"/vto/jobs/{uuid.uuid4()}"),
        ("GET", "/api-keys"),
    ):
        response = client.request(method, f"{API}{path}", headers=headers)
        problem(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_revoking_a_malformed_id_is_422(client: Any, services: Any) -> None:
    caller = seller(services)
    problem(client.delete(f"{API}/api-keys/not-an-id", headers=caller.headers), 422, "validation_error")
    problem(client.delete(f"{API}/api-keys/{uuid.uuid4()}", headers=caller.headers), 404, "not_found")
