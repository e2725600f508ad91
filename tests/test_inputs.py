"""Hard input at the trust boundary: control characters refused in every text field (422),
every query parameter validated (never a 500), a body limit on every route (413 before the
body is parsed). Each test is an attack that got through before."""

from __future__ import annotations

import json
import uuid
from typing import Any

import anyio
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import text

from command_api.app import create_app
from command_api.inputs import InputModel
from tests.api_factories import make_user
from tests.auth_helpers import PASSWORD, is_problem, register
from tests.catalog_factories import API, create_collection, create_project, png_upload
from tests.factories import job_request

NUL = "a\u0000b"
JSON = {"content-type": "application/json"}


def ledger_rows(services: Any) -> int:
    with services.sessions() as session:
        return int(session.execute(text("SELECT count(*) FROM ledger_events")).scalar_one())


def refused(response: Any) -> None:
    body = is_problem(response, 422, "validation_error")
    assert "control character" in response.text, body


def api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every endpoint, through the routers FastAPI includes."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (included := getattr(route, "original_router", None)) is not None:
            found.extend(api_routes(included.routes))
    return found


# --- control characters -----------------------------------------------------------------------
def test_every_request_body_refuses_control_characters() -> None:
    """Every JSON body of the API is an ``InputModel`` (so a new route cannot forget it)."""
    bodies = [
        route.body_field.field_info.annotation
        for route in api_routes(create_app().routes)
        if route.body_field is not None
    ]
    json_bodies = [b for b in bodies if isinstance(b, type) and not b.__name__.startswith("Body_")]
    assert json_bodies
    assert [b for b in json_bodies if not issubclass(b, InputModel)] == []


def test_nul_in_a_grant_reason_is_refused_and_nothing_is_appended(client: Any, services: Any) -> None:
    admin, caller = make_user(services, admin=True), make_user(services)
    before = ledger_rows(services)
    grant = {"user_id": str(caller.id), "credits": 1, "reason": NUL}
    refused(client.post(f"{API}/admin/grants", json=grant, headers=admin.headers))
    tickets = {"user_id": str(caller.id), "tickets": {"look\u0000book": 1}, "reason": "x"}
    refused(client.post(f"{API}/admin/grants", json=tickets, headers=admin.headers))
    plan = {"user_id": str(caller.id), "subscription": {"plan": "pro\x85", "days": 1}, "reason": "x"}
    refused(client.post(f"{API}/admin/grants", json=plan, headers=admin.headers))
    assert ledger_rows(services) == before
    assert client.get(f"{API}/points", headers=caller.headers).json()["credit"] == 0


def test_nul_in_a_refund_reason_is_refused_and_nothing_is_appended(client: Any, services: Any) -> None:
    admin, caller = make_user(services, admin=True), make_user(services)
    services.ledger.grant_credits(caller.id, 3, "test")
    job = uuid.uuid4()
    services.wait_for(services.ledger.request_job(caller.id, job, "image", job_request()).position)
    before = ledger_rows(services)
    body = {"job_id": str(job), "reason": NUL}
    refused(client.post(f"{API}/points/refund", json=body, headers=admin.headers))
    assert ledger_rows(services) == before
    ok = client.post(f"{API}/points/refund", json={**body, "reason": "blurry"}, headers=admin.headers)
    assert ok.status_code == 200, ok.text


def test_nul_in_sign_in_and_profile_fields_is_a_422_not_a_500(client: Any, services: Any) -> None:
    register(client, "seller@example.com")
    refused(client.post(f"{API}/auth/login", json={"email": "seller@example.com", "password": NUL}))
    refused(client.post(f"{API}/auth/login", json={"email": f"{NUL}@example.com", "password": PASSWORD}))
    refused(
        client.post(
            f"{API}/auth/register", json={"email": "new@example.com", "password": PASSWORD, "name": NUL}
        )
    )
    refused(client.post(f"{API}/auth/refresh", json={"refresh_token": NUL}))
    caller = make_user(services)
    refused(client.patch(f"{API}/users/me", json={"name": NUL}, headers=caller.headers))
    surrogate = b'{"name": "lone \\ud800 surrogate"}'  # JSON can escape what UTF-8 cannot encode
    refused(client.patch(f"{API}/users/me", content=surrogate, headers={**caller.headers, **JSON}))
    # A key of the body is text too.
    refused(client.patch(f"{API}/users/me", json={"name": "ok", "x\u0000": 1}, headers=caller.headers))
    # Tab, line feed and carriage return are text.
    assert client.patch(f"{API}/users/me", json={"name": "a\tb"}, headers=caller.headers).status_code == 200


def test_control_characters_in_catalog_names_forms_and_queries(client: Any, services: Any) -> None:
    caller = make_user(services)
    refused(client.post(f"{API}/collections", json={"name": NUL}, headers=caller.headers))
    collection = create_collection(client, caller)
    refused(client.patch(f"{API}/collections/{collection['id']}", json={"name": NUL}, headers=caller.headers))
    refused(
        client.post(
            f"{API}/collections", json={"name": "ok", "description": "bell \u0007"}, headers=caller.headers
        )
    )
    project = create_project(client, caller, collection["id"])
    refused(
        client.patch(f"{API}/projects/{project['id']}", json={"marketing_copy": NUL}, headers=caller.headers)
    )
    # Multipart text fields.
    refused(
        client.post(
            f"{API}/assets", data={"type": "model", "name": NUL}, files=png_upload(), headers=caller.headers
        )
    )
    refused(
        client.post(
            f"{API}/projects/{project['id']}/products",
            data={"category": "top", "side": "front", "name": "\x1b[31m"},
            files=png_upload(),
            headers=caller.headers,
        )
    )
    # Query parameters.
    refused(client.get(f"{API}/points/usage", params={"cursor": "1\u0000"}, headers=caller.headers))
    refused(
        client.get(f"{API}/auth/oauth/google/authorize", params={"redirect_uri": f"https://a.example/{NUL}"})
    )


# --- query parameters -------------------------------------------------------------------------
MALFORMED_CURSORS = [
    f"inf_{uuid.uuid4().hex}",
    f"inf.{uuid.uuid4().hex}",
    f"nan.{uuid.uuid4().hex}",
    f"1e9.{uuid.uuid4().hex}",
    f"-1.{uuid.uuid4().hex}",
    f"{'9' * 19}.{uuid.uuid4().hex}",
    f"{'9' * 30}.{uuid.uuid4().hex}",
    f"\u00b2.{uuid.uuid4().hex}",
    f"\u0663.{uuid.uuid4().hex}",  # an Arabic-Indic digit: int() would take it
    f"1.{'g' * 32}",
    f"1.{uuid.uuid4().hex}.1",
    "\u00b2",
    "\u0663",
    "9" * 19,
    "9223372036854775808",  # 2**63: no bigint
    "-9223372036854775809",
    "",
    ".",
    "%",
    "1.2.3",
]


@pytest.mark.parametrize(
    "path",
    ["/vto/jobs", "/points/usage", "/collections", "/projects", "/assets", "/vto/projects/{project}/results"],
)
def test_malformed_cursors_are_400_and_limits_422(client: Any, services: Any, path: str) -> None:
    caller = make_user(services)
    if "{project}" in path:
        path = path.format(project=create_project(client, caller)["id"])
    for cursor in MALFORMED_CURSORS:
        response = client.get(f"{API}{path}", params={"cursor": cursor}, headers=caller.headers)
        assert (cursor, response.status_code) == (cursor, 400), response.text
        is_problem(response, 400, "invalid_cursor")
    for limit in ("0", "-1", "201", "1e3", "\u00b2", "99999999999999999999999", "nan", ""):
        response = client.get(f"{API}{path}", params={"limit": limit}, headers=caller.headers)
        assert response.status_code == 422, (limit, response.status_code, response.text)


def test_malformed_filters_are_422(client: Any, services: Any) -> None:
    caller = make_user(services)
    for path, params in [
        ("/projects", {"collection_id": "not-a-uuid"}),
        ("/projects", {"collection_id": "\u00b2"}),
        ("/vto/jobs", {"project_id": "x"}),
        ("/vto/jobs", {"status": "exploded"}),
        ("/assets", {"type": "\u0000"}),
    ]:
        response = client.get(f"{API}{path}", params=params, headers=caller.headers)
        is_problem(response, 422, "validation_error")
    redirect = client.get(f"{API}/auth/oauth/google/authorize", params={"redirect_uri": "x" * 5000})
    is_problem(redirect, 422, "validation_error")


# --- body limits ------------------------------------------------------------------------------
def test_a_large_json_body_is_refused_before_it_is_parsed(client: Any, services: Any) -> None:
    big = b'{"email": "a@example.com", "password": "' + b"x" * (12 * 1024 * 1024) + b'"}'
    response = client.post(f"{API}/auth/login", content=big, headers={"content-type": "application/json"})
    is_problem(response, 413, "payload_too_large")
    limit = services.settings.max_json_bytes
    just_over = b'{"email": "a@example.com", "password": "' + b"x" * limit + b'"}'
    is_problem(
        client.post(f"{API}/auth/login", content=just_over, headers={"content-type": "application/json"}),
        413,
        "payload_too_large",
    )
    # Streamed (chunked, no Content-Length): counted, and stopped at the limit.
    chunks = iter([b'{"email": "a@example.com", "password": "', b"x" * limit, b"x" * limit, b'"}'])
    streamed = client.post(f"{API}/auth/login", content=chunks, headers={"content-type": "application/json"})
    is_problem(streamed, 413, "payload_too_large")
    # A multipart body sent to a JSON route gets the JSON route's limit.
    caller = make_user(services)
    multipart = client.post(
        f"{API}/collections",
        files={"file": ("a.bin", b"x" * (limit + 1), "application/octet-stream")},
        headers=caller.headers,
    )
    is_problem(multipart, 413, "payload_too_large")
    # Every route, including routes that take no body and paths that match none.
    for method, path in [("POST", f"{API}/vto/jobs/{uuid.uuid4()}/cancel"), ("PUT", "/no/such/path")]:
        response = client.request(method, path, content=b"x" * (limit + 1), headers=caller.headers)
        is_problem(response, 413, "payload_too_large")
    # The longest text field fits even when a client escapes every character (json.dumps does).
    owner = make_user(services)
    project = create_project(client, owner)
    copy = json.dumps({"marketing_copy": "\uac00\U0001f455" * 10_000})  # 6 and 12 bytes a character
    patched = client.patch(f"{API}/projects/{project['id']}", content=copy, headers={**owner.headers, **JSON})
    assert patched.status_code == 200, patched.text
    # Under the limit nothing changes.
    assert (
        client.post(f"{API}/auth/login", json={"email": "a@example.com", "password": "x"}).status_code == 401
    )


def test_a_streamed_body_is_read_only_up_to_its_limit(client: Any, services: Any) -> None:
    """An endless chunked body: the app stops receiving once the limit is passed."""
    limit, chunk = services.settings.max_json_bytes, b"x" * 1024
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{API}/auth/login",
        "raw_path": f"{API}/auth/login".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    anyio.run(client.app, scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert pulled == limit // len(chunk) + 1
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["code"] == "payload_too_large"
