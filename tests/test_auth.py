"""/auth: register, login, refresh-token rotation, social login (providers faked at their HTTP
boundary with ``httpx2.MockTransport``; no network)."""

from __future__ import annotations

import base64
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import jwt
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge as s256
from sqlalchemy import select

from command_api.auth import tokens
from command_api.auth.oauth import OAuthProviders
from command_api.users.models import MailToken, OAuthIdentity, RefreshToken, User
from infra.settings import Settings
from tests.api_factories import make_user
from tests.auth_helpers import (
    API,
    PASSWORD,
    bearer,
    counts,
    is_problem,
    login,
    refresh,
    register,
    stored_user,
    user_id_of,
    wide,
)

REDIRECT = "https://app.example.com/oauth/callback"
VERIFIER = "v" * 43


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    """As in conftest, with both social-login providers configured."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path / "data",
        google_client_id="google-client",
        google_client_secret="google-secret",
        kakao_client_id="kakao-client",
        kakao_client_secret="kakao-secret",
    )


# --- register ---------------------------------------------------------------------------------
def test_register_creates_a_user_with_a_ledger_account(client: Any, services: Any) -> None:
    body = register(client, "Seller@Example.COM", name="  Kim  ", language="ko")
    assert set(body) == {"id", "email", "email_verified", "name", "language", "roles", "created_at"}
    assert body["email_verified"] is False
    assert (body["email"], body["name"], body["language"], body["roles"]) == (
        "seller@example.com",
        "Kim",
        "ko",
        ["user"],
    )
    stored = stored_user(services, body["id"])
    assert stored.password_hash is not None and stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash
    assert services.ledger.has_account(stored.id)

    defaults = register(client, "plain@example.com")
    assert (defaults["name"], defaults["language"]) == (None, "en")
    # Registering grants no role (admins are made with `vto admin add`: tests/test_admin.py).
    assert register(client, "ADMIN@example.com")["roles"] == ["user"]

    before = counts(services)
    taken = client.post(f"{API}/auth/register", json={"email": "SELLER@example.com", "password": "x" * 8})
    is_problem(taken, 409, "email_taken")
    assert counts(services) == before


def test_register_rejects_bad_input_and_stores_nothing(client: Any, services: Any) -> None:
    ok = {"email": "new@example.com", "password": PASSWORD}
    bad_bodies: list[Any] = [
        {},
        {"email": "new@example.com"},
        {"password": PASSWORD},
        {**ok, "email": "not-an-email"},
        {**ok, "email": "a" * 400 + "@example.com"},
        {**ok, "password": "short"},
        {**ok, "password": "p" * 257},
        {**ok, "password": 12345678},
        {**ok, "email": ["new@example.com"]},
        {**ok, "name": "n" * 10_000},
        {**ok, "name": "   "},
        {**ok, "name": 42},
        {**ok, "language": "fr"},
        {**ok, "language": None},
        {**ok, "roles": ["admin"]},
        [ok],
        "new@example.com",
    ]
    for body in bad_bodies:
        is_problem(client.post(f"{API}/auth/register", json=body), 422, "validation_error")
    malformed = client.post(
        f"{API}/auth/register",
        content=b'{"email": "new@example.com", ',
        headers={"content-type": "application/json"},
    )
    is_problem(malformed, 422, "validation_error")
    form = client.post(f"{API}/auth/register", data=ok)  # a form where JSON is expected
    is_problem(form, 422, "validation_error")
    assert counts(services) == (0, 0, 0)
    # the same body, well-formed, is accepted
    assert client.post(f"{API}/auth/register", json=ok).status_code == 201


def test_registration_is_throttled_per_client_address(client: Any, services: Any, replica: Any) -> None:
    """Attack 4: 40 concurrent registrations from one address were all 201. At most
    ``VTO_REGISTER_MAX_PER_ADDRESS`` (20) per address in ``VTO_REGISTER_WINDOW_S``, across
    replicas; every attempt counts (a 409 too: registering is how one asks whether an address
    has an account)."""

    def attempt(n: int) -> int:
        app = client if n % 2 else replica
        body = {"email": f"burst{n}@example.com", "password": PASSWORD}
        return int(app.post(f"{API}/auth/register", json=body).status_code)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(attempt, range(40)))
    assert sorted(answers) == [201] * 20 + [429] * 20
    refused = client.post(f"{API}/auth/register", json={"email": "late@example.com", "password": PASSWORD})
    body = is_problem(refused, 429, "too_many_registrations")
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600 and body["retry_after"] >= 1
    assert counts(services)[0] == 20


# --- login ------------------------------------------------------------------------------------
def test_login_gives_tokens_and_one_answer_for_every_failure(client: Any, services: Any) -> None:
    user = register(client, "buyer@example.com")
    response = login(client, "BUYER@example.com")
    assert response.status_code == 200, response.text
    pair = response.json()
    assert set(pair) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert pair["token_type"] == "bearer"
    assert pair["expires_in"] == int(tokens.ACCESS_TTL.total_seconds())
    me = client.get(f"{API}/users/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200 and me.json()["id"] == user["id"]
    with services.sessions() as session:
        row = session.scalars(select(RefreshToken)).one()
        assert str(row.user_id) == user["id"] and row.used_at is None and row.revoked_at is None

    wrong = is_problem(login(client, "buyer@example.com", "wrong password"), 401, "invalid_credentials")
    unknown = is_problem(login(client, "nobody@example.com"), 401, "invalid_credentials")
    assert wrong["detail"] == unknown["detail"]
    # an account made by social login has no password
    with services.sessions() as session:
        session.add(User(email="social@example.com", password_hash=None, language="en", token_version=0))
        session.commit()
    is_problem(login(client, "social@example.com", "anything at all"), 401, "invalid_credentials")

    before = counts(services)
    for body in [
        {},
        {"email": "buyer@example.com"},
        {"password": PASSWORD},
        {"email": 1, "password": PASSWORD},
        {"email": "buyer@example.com", "password": "p" * 10_000},
        {"email": "buyer@example.com", "password": ""},
        {"email": "buyer@example.com", "password": PASSWORD, "extra": 1},
    ]:
        is_problem(client.post(f"{API}/auth/login", json=body), 422, "validation_error")
    malformed = client.post(f"{API}/auth/login", content=b"{", headers={"content-type": "application/json"})
    is_problem(malformed, 422)
    assert counts(services) == before


def test_look_alike_addresses_are_one_address_everywhere(client: Any, services: Any) -> None:
    """Emails are compared after NFKC and IDNA normalisation, the same way at registration,
    login and every lookup: a full-width ``alice@…`` (U+FF41 ...) cannot register beside ``alice@…``, and a
    full-width (or IDNA) domain works at login as it did at registration."""
    alice = register(client, "alice@example.com")
    for look_alike in [
        f"{wide('alice')}@example.com",
        f"ALICE@{wide('example')}.{wide('com')}",
        f"alice{wide('@')}example.com",
    ]:
        taken = client.post(f"{API}/auth/register", json={"email": look_alike, "password": PASSWORD})
        is_problem(taken, 409, "email_taken")
        assert login(client, look_alike).status_code == 200
    bob = register(client, f"{wide('b')}ob@{wide('e')}xample.com")
    assert bob["email"] == "bob@example.com"
    for typed in [f"bob@{wide('e')}xample.com", f"{wide('BOB')}@EXAMPLE.COM", "bob@example.com"]:
        response = login(client, typed)
        assert response.status_code == 200, (typed, response.text)
        assert user_id_of(response.json()["access_token"]) == bob["id"]
    idn = register(client, "kim@XN--BCHER-KVA.example")
    assert idn["email"] == "kim@bücher.example"  # one form for the domain: Unicode
    assert login(client, "kim@bücher.example").status_code == 200
    assert login(client, "kim@xn--bcher-kva.example").status_code == 200
    is_problem(
        client.post(f"{API}/auth/register", json={"email": "KIM@Bücher.example", "password": PASSWORD}),
        409,
        "email_taken",
    )
    with services.sessions() as session:
        emails = sorted(session.scalars(select(User.email)))
    assert emails == ["alice@example.com", "bob@example.com", "kim@bücher.example"]
    # An admin's grant by a look-alike address reaches the same account.
    admin = make_user(services, admin=True)
    grant = {"email": f"{wide('alice')}@example.com", "credits": 3, "reason": "look-alike"}
    granted = client.post(f"{API}/admin/grants", json=grant, headers=admin.headers)
    assert granted.status_code == 201, granted.text
    assert granted.json()["user_id"] == alice["id"]


# --- refresh ----------------------------------------------------------------------------------
def test_refresh_rotates_and_reuse_revokes_the_family(client: Any, services: Any) -> None:
    register(client, "rotate@example.com")
    first = login(client, "rotate@example.com").json()
    other_sign_in = login(client, "rotate@example.com").json()

    second = refresh(client, first["refresh_token"])
    assert second.status_code == 200, second.text
    second_pair = second.json()
    assert second_pair["refresh_token"] != first["refresh_token"]
    assert client.get(f"{API}/users/me", headers=bearer(second_pair["access_token"])).status_code == 200
    third = refresh(client, second_pair["refresh_token"]).json()

    # the first token again: reuse, so the whole family (first, second, third) is revoked
    is_problem(refresh(client, first["refresh_token"]), 401, "refresh_token_reused")
    is_problem(refresh(client, third["refresh_token"]), 401, "invalid_token")
    family = jwt.decode(first["refresh_token"], options={"verify_signature": False})["fam"]
    with services.sessions() as session:
        rows = session.scalars(select(RefreshToken).where(RefreshToken.family == uuid.UUID(family))).all()
        assert len(rows) == 3 and all(r.revoked_at is not None for r in rows)
    # another sign-in of the same user is not affected
    assert refresh(client, other_sign_in["refresh_token"]).status_code == 200


def test_refresh_and_access_reject_bad_tokens(client: Any, services: Any) -> None:
    user = register(client, "tokens@example.com")
    pair = login(client, "tokens@example.com").json()
    user_id = uuid.UUID(user["id"])
    before = counts(services)

    header, payload, signature = pair["refresh_token"].split(".")
    tampered_signature = (
        f"{header}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    )
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = str(uuid.uuid4())
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    tampered_payload = f"{header}.{forged_payload}.{signature}"
    expired, _ = tokens.issue(
        services.secret, user_id, 0, "refresh", timedelta(seconds=-60), family=uuid.uuid4()
    )
    unsigned = jwt.encode({**claims, "sub": user["id"]}, None, algorithm="none")
    other_secret, _ = tokens.issue("another-secret-" + "x" * 32, user_id, 0, "refresh", tokens.REFRESH_TTL)
    unknown_jti, _ = tokens.issue(services.secret, user_id, 0, "refresh", tokens.REFRESH_TTL, uuid.uuid4())
    for bad in [
        tampered_signature,
        tampered_payload,
        expired,
        unsigned,
        other_secret,
        unknown_jti,
        pair["access_token"],  # an access token is not a refresh token
        "not-a-jwt",
    ]:
        is_problem(refresh(client, bad), 401, "invalid_token")
    for body in [{}, {"refresh_token": ""}, {"refresh_token": 5}, {"refresh_token": "x" * 10_000}]:
        is_problem(client.post(f"{API}/auth/refresh", json=body), 422, "validation_error")
    assert counts(services) == before
    # the genuine token was never consumed by the failures above
    assert refresh(client, pair["refresh_token"]).status_code == 200

    expired_access, _ = tokens.issue(services.secret, user_id, 0, "access", timedelta(seconds=-60))
    access_claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    for bad in [
        expired_access,
        jwt.encode(access_claims, None, algorithm="none"),
        pair["refresh_token"],  # a refresh token is not an access token
        pair["access_token"][:-3] + "abc",
    ]:
        is_problem(client.get(f"{API}/users/me", headers=bearer(bad)), 401)


# --- social login -----------------------------------------------------------------------------
@dataclass
class FakeProviders:
    """Google's and Kakao's token and user-info endpoints, as an httpx transport."""

    userinfo: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_status: int = 200
    token_body: dict[str, Any] = field(default_factory=lambda: {"access_token": "provider-token"})
    userinfo_status: int = 200
    fail_network: bool = False
    requests: list[httpx2.Request] = field(default_factory=list)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if self.fail_network:
            raise httpx2.ConnectError("unreachable", request=request)
        host = request.url.host
        if request.url.path in ("/token", "/oauth/token"):
            assert request.method == "POST"
            return httpx2.Response(self.token_status, json={**self.token_body, "token_type": "Bearer"})
        assert request.headers["authorization"] == "Bearer provider-token"
        provider = "google" if host.endswith("googleapis.com") else "kakao"
        return httpx2.Response(self.userinfo_status, json=self.userinfo.get(provider, {}))

    def install(self, services: Any) -> None:
        services.oauth.transport = httpx2.MockTransport(self.handle)

    def token_form(self, index: int = 0) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.requests[index].content.decode()).items()}


def oauth(client: Any, provider: str, **body: Any) -> Any:
    """Finish a sign-in with a fresh state and verifier from the authorize call (a made-up
    pair where that call fails), unless the test gives its own."""
    started = client.get(f"{API}/auth/oauth/{provider}/authorize", params={"redirect_uri": REDIRECT})
    flow = started.json() if started.status_code == 200 else {"state": "none", "code_verifier": VERIFIER}
    payload = {
        "code": "the-code",
        "redirect_uri": REDIRECT,
        "state": flow["state"],
        "code_verifier": flow["code_verifier"],
        **body,
    }
    return client.post(f"{API}/auth/oauth/{provider}", json=payload)


def google_user(sub: str, email: str, verified: bool = True) -> dict[str, Any]:
    return {"sub": sub, "email": email, "email_verified": verified, "name": "Google Person"}


def kakao_user(kakao_id: int, email: str | None, verified: bool = True) -> dict[str, Any]:
    account: dict[str, Any] = {"profile": {"nickname": "카카오"}}
    if email is not None:
        account.update(email=email, is_email_valid=True, is_email_verified=verified)
    return {"id": kakao_id, "kakao_account": account}


def test_google_creates_then_links_by_subject(client: Any, services: Any) -> None:
    fake = FakeProviders(userinfo={"google": google_user("g-1", "New.Person@Gmail.com")})
    fake.install(services)
    first = oauth(client, "google")
    assert first.status_code == 200, first.text
    form = fake.token_form(0)
    assert form["grant_type"] == "authorization_code"
    assert (form["code"], form["redirect_uri"]) == ("the-code", REDIRECT)
    assert len(form["code_verifier"]) >= 43  # the verifier of the state (PKCE)
    assert (form["client_id"], form["client_secret"]) == ("google-client", "google-secret")
    assert str(fake.requests[1].url) == "https://openidconnect.googleapis.com/v1/userinfo"

    me = client.get(f"{API}/users/me", headers=bearer(first.json()["access_token"])).json()
    assert (me["email"], me["name"], me["roles"]) == ("new.person@gmail.com", "Google Person", ["user"])
    assert services.ledger.has_account(uuid.UUID(me["id"]))
    assert refresh(client, first.json()["refresh_token"]).status_code == 200

    # second sign-in: the same subject, even with another email at the provider, is the same user
    fake.userinfo["google"] = google_user("g-1", "changed@gmail.com")
    second = oauth(client, "google")
    assert user_id_of(second.json()["access_token"]) == me["id"]
    assert counts(services)[0] == 1 and counts(services)[2] == 1

    # after the account is deleted, the identity signs in to a fresh account
    assert client.delete(f"{API}/users/me", headers=bearer(second.json()["access_token"])).status_code == 204
    third = oauth(client, "google")
    assert third.status_code == 200, third.text
    assert user_id_of(third.json()["access_token"]) != me["id"]
    with services.sessions() as session:
        link = session.scalars(select(OAuthIdentity)).one()
        assert str(link.user_id) == user_id_of(third.json()["access_token"])
        assert link.email == "changed@gmail.com"


def test_kakao_links_by_verified_email_to_an_existing_user(client: Any, services: Any) -> None:
    existing = register(client, "member@kakao.com")
    mark_verified(services, existing["id"])
    fake = FakeProviders(userinfo={"kakao": kakao_user(777, "Member@Kakao.com")})
    fake.install(services)
    response = oauth(client, "kakao")
    assert response.status_code == 200, response.text
    assert user_id_of(response.json()["access_token"]) == existing["id"]
    assert len(fake.token_form(0)["code_verifier"]) >= 43
    assert fake.token_form(0)["client_id"] == "kakao-client"
    assert str(fake.requests[1].url) == "https://kapi.kakao.com/v2/user/me"
    with services.sessions() as session:
        link = session.scalars(select(OAuthIdentity)).one()
        assert (link.provider, link.subject, str(link.user_id)) == ("kakao", "777", existing["id"])
    # the password still works too
    assert login(client, "member@kakao.com").status_code == 200

    # an unverified (or missing) email neither links nor creates an account
    before = counts(services)
    for info in [kakao_user(778, "member@kakao.com", verified=False), kakao_user(779, None)]:
        fake.userinfo["kakao"] = info
        is_problem(oauth(client, "kakao"), 400, "oauth_email_required")
    assert counts(services) == before


def test_provider_profiles_pass_the_text_rules_of_every_input(client: Any, services: Any) -> None:
    """Attack 6: a Google or Kakao profile holding NUL was a 500 (PostgreSQL refuses it), and
    U+0085 was stored as given. A profile name is cleaned by the rule every input obeys (each
    refused character becomes a space); an email or subject holding one is unusable."""
    fake = FakeProviders(
        userinfo={
            "google": {**google_user("g-nul", "nul@gmail.com"), "name": "Evil\x00Name"},
            "kakao": {
                "id": 4242,
                "kakao_account": {
                    "email": "nel@kakao.com",
                    "is_email_valid": True,
                    "is_email_verified": True,
                    "profile": {"nickname": "Line\u0085Break\u009b"},
                },
            },
        }
    )
    fake.install(services)
    for provider, name in [("google", "Evil Name"), ("kakao", "Line Break")]:
        response = oauth(client, provider)
        assert response.status_code == 200, response.text
        me = client.get(f"{API}/users/me", headers=bearer(response.json()["access_token"])).json()
        assert me["name"].split() == name.split() and not any(0x80 <= ord(c) <= 0x9F for c in me["name"])
        assert "\x00" not in me["name"]

    before = counts(services)
    for info in [
        google_user("g-2", "bad\x00@gmail.com"),
        google_user("g-3", "bad\u0085@gmail.com"),
        {**google_user("g-4", "x@gmail.com"), "email": 12},
        {**google_user("g-5", "x@gmail.com"), "email": "not an address"},
    ]:
        fake.userinfo["google"] = info
        is_problem(oauth(client, "google"), 400, "oauth_email_required")
    for info in [
        google_user("g-\x00", "sub@gmail.com"),
        {**google_user("", "sub@gmail.com"), "sub": None},
        {**google_user("", "sub@gmail.com"), "sub": {"id": 1}},
    ]:
        fake.userinfo["google"] = info
        is_problem(oauth(client, "google"), 502, "oauth_provider_error")
    fake.userinfo["google"] = {**google_user("g-6", "odd@gmail.com"), "name": ["not", "text"]}
    odd = oauth(client, "google")
    assert odd.status_code == 200, odd.text
    assert client.get(f"{API}/users/me", headers=bearer(odd.json()["access_token"])).json()["name"] is None
    assert counts(services)[0] == before[0] + 1


def test_oauth_failures_are_problems_and_store_nothing(client: Any, services: Any) -> None:
    fake = FakeProviders(userinfo={"google": google_user("g-2", "x@gmail.com")})
    fake.install(services)

    fake.token_status, fake.token_body = 400, {"error": "invalid_grant", "error_description": "expired"}
    is_problem(oauth(client, "google"), 400, "oauth_code_rejected")
    fake.token_status, fake.token_body = 500, {"error": "server_error"}
    is_problem(oauth(client, "google"), 502, "oauth_provider_error")
    fake.token_status, fake.token_body = 200, {"access_token": "provider-token"}
    fake.userinfo_status = 503
    is_problem(oauth(client, "google"), 502, "oauth_provider_error")
    fake.userinfo_status = 200
    fake.userinfo["google"] = {"email": "x@gmail.com", "email_verified": True}  # no sub
    is_problem(oauth(client, "google"), 502, "oauth_provider_error")
    fake.fail_network = True
    is_problem(oauth(client, "kakao"), 502, "oauth_provider_error")

    is_problem(oauth(client, "facebook"), 404, "unknown_provider")
    is_problem(client.get(f"{API}/auth/oauth/facebook/authorize", params={"redirect_uri": REDIRECT}), 404)
    for body in [
        {"code": None},
        {"code": ""},
        {"redirect_uri": 5},
        {"code_verifier": "too-short"},
        {"code": "c" * 10_000},
        {"unexpected": True},
    ]:
        is_problem(oauth(client, "google", **body), 422, "validation_error")
    is_problem(client.post(f"{API}/auth/oauth/google", json={"redirect_uri": REDIRECT}), 422)
    malformed = client.post(
        f"{API}/auth/oauth/google", content=b"[1,", headers={"content-type": "application/json"}
    )
    is_problem(malformed, 422)
    assert counts(services) == (0, 0, 0)

    # a known provider without a client id in the settings: 503, before any HTTP call
    fake.fail_network = False
    calls = len(fake.requests)
    unconfigured = Settings(_env_file=None, data_dir=services.settings.data_dir)  # type: ignore[call-arg]
    transport = httpx2.MockTransport(fake.handle)
    services.oauth = OAuthProviders(unconfigured, services.secret, transport=transport)
    is_problem(oauth(client, "google"), 503, "oauth_not_configured")
    is_problem(client.get(f"{API}/auth/oauth/kakao/authorize", params={"redirect_uri": REDIRECT}), 503)
    assert len(fake.requests) == calls


def test_authorize_gives_a_pkce_url_and_a_state_checked_on_return(client: Any, services: Any) -> None:
    fake = FakeProviders(userinfo={"google": google_user("g-3", "pkce@gmail.com")})
    fake.install(services)
    response = client.get(f"{API}/auth/oauth/google/authorize", params={"redirect_uri": REDIRECT})
    assert response.status_code == 200, response.text
    started = response.json()
    url = urlsplit(started["authorization_url"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://accounts.google.com/o/oauth2/v2/auth"
    assert query["response_type"] == "code" and query["client_id"] == "google-client"
    assert query["redirect_uri"] == REDIRECT and query["state"] == started["state"]
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] == s256(started["code_verifier"])
    assert "email" in query["scope"].split()
    assert started["expires_in"] == 600

    verifier, state = started["code_verifier"], started["state"]
    for bad_state, bad_verifier, bad_redirect in [
        (state[:-2] + "xx", verifier, REDIRECT),  # tampered
        (state, "w" * 43, REDIRECT),  # another verifier
        (state, verifier, "https://evil.example.com/cb"),  # another redirect_uri
    ]:
        bad = oauth(client, "google", state=bad_state, code_verifier=bad_verifier, redirect_uri=bad_redirect)
        is_problem(bad, 400, "invalid_state")
    kakao_state = oauth(client, "kakao", state=state, code_verifier=verifier)  # another provider
    is_problem(kakao_state, 400, "invalid_state")
    assert fake.requests == [] and counts(services) == (0, 0, 0)

    done = oauth(client, "google", state=state, code_verifier=verifier)
    assert done.status_code == 200, done.text
    assert fake.token_form(0)["code_verifier"] == verifier
    is_problem(client.get(f"{API}/auth/oauth/google/authorize"), 422, "validation_error")


def test_an_oauth_state_is_used_once_across_replicas(client: Any, replica: Any, services: Any) -> None:
    """An OAuth ``state`` (with its code) could be used twice; now the first finished sign-in
    uses it up, in the database, so no replica takes it again (400 before the provider is
    called). A state that failed its checks is not used up."""
    fake = FakeProviders(userinfo={"google": google_user("g-once", "once@gmail.com")})
    fake.install(services)
    started = client.get(f"{API}/auth/oauth/google/authorize", params={"redirect_uri": REDIRECT}).json()
    flow = {"state": started["state"], "code_verifier": started["code_verifier"]}
    is_problem(oauth(client, "google", **{**flow, "code_verifier": "w" * 43}), 400, "invalid_state")
    first = oauth(client, "google", **flow)
    assert first.status_code == 200, first.text
    calls = len(fake.requests)
    for app in (client, replica):
        again = is_problem(oauth(app, "google", **flow), 400, "invalid_state")
        assert "already used" in again["detail"]
    assert len(fake.requests) == calls


# --- sign-in linking: the provider's verified email against our accounts ----------------------
def mark_verified(services: Any, user_id: str) -> None:
    with services.sessions() as session:
        user = session.get(User, uuid.UUID(user_id))
        assert user is not None
        user.email_verified_at = datetime.now(UTC)
        session.commit()


def test_oauth_requires_state_and_pkce(client: Any, services: Any) -> None:
    fake = FakeProviders(userinfo={"google": google_user("g-4", "pkce-required@gmail.com")})
    fake.install(services)
    started = client.get(f"{API}/auth/oauth/google/authorize", params={"redirect_uri": REDIRECT}).json()
    base = {"code": "the-code", "redirect_uri": REDIRECT}
    for body in [
        base,
        {**base, "code_verifier": started["code_verifier"]},  # no state
        {**base, "state": started["state"]},  # no verifier
        {**base, "state": started["state"], "code_verifier": None},
        {**base, "state": None, "code_verifier": started["code_verifier"]},
    ]:
        is_problem(client.post(f"{API}/auth/oauth/google", json=body), 422, "validation_error")
    wrong = {**base, "state": started["state"], "code_verifier": VERIFIER}
    is_problem(client.post(f"{API}/auth/oauth/google", json=wrong), 400, "invalid_state")
    assert fake.requests == [] and counts(services) == (0, 0, 0)


def test_a_provider_sign_in_takes_over_an_unverified_account_from_whoever_registered_it(
    client: Any, services: Any
) -> None:
    # The attacker registers the victim's address (nobody verifies it), signs in and asks for
    # an email change to an address of theirs.
    squatted = register(client, "victim@gmail.com")
    attacker = login(client, "victim@gmail.com").json()
    change = client.post(
        f"{API}/users/me/email",
        json={"email": "attacker@evil.example", "password": PASSWORD},
        headers=bearer(attacker["access_token"]),
    )
    assert change.status_code == 202, change.text
    with services.sessions() as session:
        pending = session.scalars(select(MailToken).where(MailToken.used_at.is_(None))).all()
        assert {t.purpose for t in pending} == {"verify_email", "change_email"}

    # The victim signs in with Google, which verified victim@gmail.com.
    fake = FakeProviders(userinfo={"google": google_user("g-victim", "victim@gmail.com")})
    fake.install(services)
    victim = oauth(client, "google")
    assert victim.status_code == 200, victim.text
    assert user_id_of(victim.json()["access_token"]) == squatted["id"]

    # Nothing the attacker set up keeps access: password, access and refresh tokens, links.
    is_problem(login(client, "victim@gmail.com"), 401, "invalid_credentials")
    is_problem(client.get(f"{API}/users/me", headers=bearer(attacker["access_token"])), 401)
    is_problem(refresh(client, attacker["refresh_token"]), 401)
    with services.sessions() as session:
        assert session.scalars(select(MailToken).where(MailToken.used_at.is_(None))).all() == []
        user = session.get(User, uuid.UUID(squatted["id"]))
        assert user is not None and user.password_hash is None and user.email_verified_at is not None
    me = client.get(f"{API}/users/me", headers=bearer(victim.json()["access_token"])).json()
    assert (me["email"], me["email_verified"]) == ("victim@gmail.com", True)
    assert refresh(client, victim.json()["refresh_token"]).status_code == 200


def test_a_provider_sign_in_links_to_a_verified_account_and_keeps_its_sessions(
    client: Any, services: Any
) -> None:
    owner = register(client, "owner@gmail.com")
    mark_verified(services, owner["id"])
    session_before = login(client, "owner@gmail.com").json()
    fake = FakeProviders(userinfo={"google": google_user("g-owner", "Owner@gmail.com")})
    fake.install(services)
    linked = oauth(client, "google")
    assert linked.status_code == 200, linked.text
    assert user_id_of(linked.json()["access_token"]) == owner["id"]
    assert login(client, "owner@gmail.com").status_code == 200
    assert client.get(f"{API}/users/me", headers=bearer(session_before["access_token"])).status_code == 200
    assert refresh(client, session_before["refresh_token"]).status_code == 200
    # a new account made by a provider sign-in starts verified
    fake.userinfo["google"] = google_user("g-new", "fresh@gmail.com")
    fresh = oauth(client, "google")
    me = client.get(f"{API}/users/me", headers=bearer(fresh.json()["access_token"])).json()
    assert (me["email"], me["email_verified"]) == ("fresh@gmail.com", True)


def test_without_smtp_the_mail_is_written_under_the_data_dir(client: Any, services: Any) -> None:
    outbox = services.settings.data_dir / "mail"
    register(client, "offline@example.com")
    [path] = outbox.glob("*.eml")
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert (message["To"], message["Subject"]) == ("offline@example.com", "Confirm your email address")
    assert "/verify-email?token=" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    is_problem(
        client.post(f"{API}/auth/register", json={"email": "offline@example.com", "password": PASSWORD}), 409
    )
    assert len(list(outbox.glob("*.eml"))) == 1
