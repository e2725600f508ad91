"""The OpenAPI document, completed in one place: every status each operation can answer, each
with its problem codes and an example body; tag descriptions; multipart examples.

An operation's problems come from four sources, merged:

1. ``BY_DEPENDENCY``: what a dependency raises, for every operation that uses it (a token:
   401; the admin role: 403). A new route that depends on ``CurrentUser`` is documented with
   no work.
2. The operation's shape (``_structural``): a body (413 too large, 422 invalid), parameters
   (422), an id in the path (404), a ``cursor`` (400), an upload (415, 422), the database
   (503, except ``NO_DATABASE``).
3. ``BY_OPERATION``: what the operation's own rules raise, by ``"METHOD /path"``. A route
   added later adds its line here.
4. What the route declares itself (``responses=`` on its decorator): a status with no code
   from the above gets the generic code of that status.

Each code's status, summary and advice come from ``problem_types``. Two checks keep this
true: schemathesis' status-code conformance in ``tests/test_fuzz.py``, and a check at the end
of every test run (``tests/openapi_statuses.py``) that each status the app answered during
the run is documented for its operation."""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, UploadFile
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from command_api import deps
from command_api.problems import NO_DATABASE, PROBLEM_JSON, PROBLEM_PAGES
from command_api.reference.problem_types import ProblemType, catalog

log = logging.getLogger(__name__)

# The host of the examples' links (what ``vto serve`` answers on by default).
EXAMPLE_BASE = "http://127.0.0.1:8000"

TAGS: list[dict[str, str]] = [
    {
        "name": "auth",
        "description": "Register, sign in (email and password, or Google and Kakao), refresh "
        "tokens, verify the email, reset the password. Every other `/api/v1` route wants "
        "`Authorization: Bearer <access_token>` from here.",
    },
    {
        "name": "users",
        "description": "The caller's own account: read, rename, change password or email, delete.",
    },
    {"name": "collections", "description": "Folders of projects, private to their owner."},
    {
        "name": "projects",
        "description": "Projects hold products and generated results; the owner shares them with "
        "other accounts as viewers (read) or editors (also add products and order jobs).",
    },
    {
        "name": "products",
        "description": "Garment images of a project (multipart upload): category and side.",
    },
    {
        "name": "assets",
        "description": "The caller's own input images (multipart upload): person photos (`model`) "
        "and backgrounds.",
    },
    {
        "name": "webhooks",
        "description": "Signed job webhooks (Standard Webhooks): the account's signing secret and "
        "its rotation, a job's deliveries and a redelivery. A job asks for them with `webhook` "
        "and `webhook_events_filter` on `POST /vto/jobs`.",
    },
    {
        "name": "vto",
        "description": "Try-on jobs: order one (its charge is reserved at once; `402` when nothing "
        "pays for it), follow it until `succeeded` (with signed output links) or `failed` "
        "(refunded), cancel it; a project's gallery.",
    },
    {
        "name": "points",
        "description": "The caller's balances (credits, tickets, subscription) and their history; "
        "an admin's refund of a job.",
    },
    {
        "name": "admin",
        "description": "For accounts holding the admin role (granted on the server with "
        "`uv run vto admin add EMAIL`): grant credits, tickets and subscriptions.",
    },
    {
        "name": "api-keys",
        "description": "Long-lived keys for servers (`vto_sk_...`, sent as `Authorization: Bearer`): "
        "made, listed and revoked by a signed-in person; a key works on every seller route but "
        "cannot manage keys or the account. Job orders with a key are rate-limited.",
    },
    {"name": "files", "description": "The stored images and outputs, behind expiring signed links."},
    {"name": "operations", "description": "Liveness, readiness and Prometheus metrics."},
]

# What each dependency raises, for every operation that depends on it (directly or not).
BY_DEPENDENCY: dict[Callable[..., Any], tuple[str, ...]] = {
    deps.current_user: ("unauthorized",),
    deps.caught_up_caller: ("unauthorized",),
    deps.access_claims: ("unauthorized",),
    deps.admin_user: ("forbidden",),
    deps.signed_in_user: ("api_key_not_allowed",),
}

# A code, or a code with the example detail this operation gives it.
Problem = str | tuple[str, str]
UNPARSABLE = ("bad_request", "There was an error parsing the body")
READ_ONLY = ("forbidden", "the project is shared with you for reading only")
OWNER_ONLY = ("forbidden", "only the project's owner may do this")
ADMIN_ONLY = ("forbidden", "this endpoint is for administrators; the operator grants the role on the server")

# What each operation's own rules raise, by "METHOD /path" (as the OpenAPI document names it).
BY_OPERATION: dict[str, tuple[Problem, ...]] = {
    "GET /readyz": ("not_ready",),
    "POST /api/v1/vto/jobs": (
        "insufficient_entitlement",
        READ_ONLY,
        "not_found",
        "idempotency_key_reused",
        "job_id_conflict",
        "no_products",
        "wrong_asset_type",
        "invalid_cancel_after",
        "invalid_deadline",
        "webhook_url_not_allowed",
        "ledger_busy",
        "job_rate_limited",
    ),
    "POST /api/v1/api-keys": ("too_many_api_keys",),
    "POST /api/v1/vto/jobs/{job_id}/cancel": ("job_finished", "ledger_busy"),
    "GET /api/v1/vto/jobs/{job_id}/events": ("not_found", "too_many_streams"),
    "GET /api/v1/vto/projects/{project_id}/results": ("not_found",),
    "POST /api/v1/points/refund": ("not_found", "job_not_found", "job_already_refunded", "ledger_busy"),
    "POST /api/v1/admin/grants": (
        ADMIN_ONLY,
        "user_not_found",
        "unknown_ticket_type",
        "invalid_amount",
        "ledger_busy",
    ),
    "GET /api/v1/points/statement": ("invalid_period", "period_too_long"),
    "GET /api/v1/admin/usage": (ADMIN_ONLY, "invalid_period", "period_too_long"),
    "GET /api/v1/files/{key}": ("invalid_signature", "not_found"),
    "POST /api/v1/auth/register": ("email_taken",),
    "POST /api/v1/auth/login": ("invalid_credentials", "too_many_login_attempts"),
    "POST /api/v1/auth/refresh": ("invalid_token", "refresh_token_reused", "conflict"),
    "GET /api/v1/auth/oauth/{provider}/authorize": ("unknown_provider", "oauth_not_configured"),
    "POST /api/v1/auth/oauth/{provider}": (
        "unknown_provider",
        "oauth_not_configured",
        "invalid_state",
        "oauth_code_rejected",
        "oauth_email_required",
        "oauth_provider_error",
        "conflict",
    ),
    "POST /api/v1/auth/verify-email": ("invalid_mail_token", "email_taken"),
    "POST /api/v1/auth/password/reset": ("invalid_mail_token",),
    "POST /api/v1/users/me/password": ("wrong_password", "password_not_set"),
    "POST /api/v1/users/me/email": ("wrong_password", "email_taken", "email_unchanged"),
    "POST /api/v1/projects": ("not_found",),
    "GET /api/v1/projects": ("not_found",),
    "PATCH /api/v1/projects/{project_id}": (READ_ONLY, OWNER_ONLY),
    "POST /api/v1/projects/{project_id}/shares": (OWNER_ONLY, "user_not_found", "cannot_share_with_owner"),
    "DELETE /api/v1/projects/{project_id}/shares/{user_id}": (OWNER_ONLY, "share_not_found"),
    "POST /api/v1/projects/{project_id}/products": (READ_ONLY, "too_many_products"),
}

# The generic code of a status a route declares without naming its code.
GENERIC = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "database_unavailable",
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "format": "uri", "description": "The page that describes `code`."},
        "title": {"type": "string", "description": "The status's phrase."},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "What happened, for a person."},
        "code": {"type": "string", "description": "What happened, for a program."},
        "errors": {
            "type": "array",
            "description": "validation_error: each invalid field (`loc`) and why (`msg`).",
            "items": {"type": "object"},
        },
    },
    "additionalProperties": True,
}

HEADERS = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}},
    "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}},
}
HEADERS_BY_CODE = {
    "database_unavailable": "Retry-After",
    "too_many_login_attempts": "Retry-After",
    "job_rate_limited": "Retry-After",
    "unauthorized": "WWW-Authenticate",
}


@dataclass
class Documented:
    """The problems of one operation: code -> example detail (``None``: the code's own)."""

    codes: dict[str, str | None] = field(default_factory=dict)

    def add(self, problems: Iterable[Problem]) -> None:
        for item in problems:
            code, detail = item if isinstance(item, tuple) else (item, None)
            if detail is not None or code not in self.codes:
                self.codes[code] = detail


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def _structural(route: RouteContext) -> list[Problem]:
    """The problems an operation can answer because of its shape."""
    found: list[Problem] = []
    all_deps = list(_dependants(route.dependant))
    params = [
        p for d in all_deps for p in (*d.path_params, *d.query_params, *d.header_params, *d.body_params)
    ]
    if route.body_field is not None or any(d.body_params for d in all_deps):
        found += ["payload_too_large", "validation_error", UNPARSABLE]
    if params:
        found.append("validation_error")
    if any(p.field_info.annotation is uuid.UUID for d in all_deps for p in d.path_params):
        found.append("not_found")
    if any(p.alias == "cursor" for d in all_deps for p in d.query_params):
        found.append("invalid_cursor")
    if any(p.field_info.annotation is UploadFile for d in all_deps for p in d.body_params):
        found += ["unsupported_media_type", "invalid_image"]
    if route.path_format not in NO_DATABASE:
        found.append("database_unavailable")
    for dependant in all_deps:
        if dependant.call is not None:
            found += BY_DEPENDENCY.get(dependant.call, ())
    return found


def _example(problem_type: ProblemType, detail: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"{EXAMPLE_BASE}{PROBLEM_PAGES}/{problem_type.code}",
        "title": problem_type.title,
        "status": problem_type.status,
        "detail": detail or problem_type.summary,
        "code": problem_type.code,
    }
    if problem_type.code == "validation_error":
        body["errors"] = [
            {"loc": ["body", "email"], "msg": "value is not a valid email address", "type": "value_error"}
        ]
    return body


def _document_operation(
    operation: dict[str, Any], documented: Documented, types: dict[str, ProblemType]
) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    by_status: dict[int, dict[str, str | None]] = {}
    for code, detail in documented.codes.items():
        by_status.setdefault(types[code].status, {})[code] = detail
    for status in [s for s in responses if s.isdigit() and int(s) >= 400]:  # declared on the route
        if int(status) not in by_status:
            by_status[int(status)] = {GENERIC.get(int(status), "bad_request"): None}
    for code_status, codes in sorted(by_status.items()):
        lines = [f"`{code}`: {detail or types[code].summary}" for code, detail in codes.items()]
        response: dict[str, Any] = {
            "description": "; ".join(lines),
            "content": {
                PROBLEM_JSON: {
                    "schema": {"$ref": "#/components/schemas/Problem"},
                    "examples": {
                        code: {"summary": code, "value": _example(types[code], detail)}
                        for code, detail in codes.items()
                    },
                }
            },
        }
        headers = {HEADERS_BY_CODE[c] for c in codes if c in HEADERS_BY_CODE}
        if headers:
            response["headers"] = {name: HEADERS[name] for name in sorted(headers)}
        responses[str(code_status)] = response


def _multipart_examples(openapi: dict[str, Any], operation: dict[str, Any]) -> None:
    """An example for each multipart body: the first value of each choice, a file name for
    each file, and the image types each file part accepts."""
    media = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
    if media is None:
        return
    schema = media.get("schema", {})
    if "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    example: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
        resolved = options[0] if options else prop
        if "$ref" in resolved:
            resolved = openapi["components"]["schemas"][resolved["$ref"].rsplit("/", 1)[-1]]
        if resolved.get("format") == "binary" or "contentMediaType" in resolved:
            example[name] = "photo.jpg"
            media.setdefault("encoding", {})[name] = {"contentType": "image/png, image/jpeg, image/webp"}
        elif "enum" in resolved:
            example[name] = resolved["enum"][0]
        elif name in schema.get("required", []):
            example[name] = "example"
    media["example"] = example


def operations(app: FastAPI) -> Iterator[RouteContext]:
    """The routes of the OpenAPI document, each with its full path (``path_format``)."""
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and route.include_in_schema:
            yield route


def document(app: FastAPI, openapi: dict[str, Any]) -> dict[str, Any]:
    """Complete the document FastAPI generated for ``app`` (see the module's docstring)."""
    openapi = copy.deepcopy(openapi)
    openapi.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    types = catalog()
    for route in operations(app):
        for method in sorted(route.methods or ()):
            operation = openapi["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            documented = Documented()
            documented.add(_structural(route))
            documented.add(BY_OPERATION.get(f"{method} {route.path_format}", ()))
            for code in [code for code in documented.codes if code not in types]:
                # A code with no entry in problem_types.DESCRIPTIONS (a test lists them): the
                # document is still served, without that code.
                log.warning("%s %s: problem code %r has no description", method, route.path_format, code)
                del documented.codes[code]
            _document_operation(operation, documented, types)
            _multipart_examples(openapi, operation)
    used = {tag for path in openapi["paths"].values() for op in path.values() for tag in op.get("tags", [])}
    described = {tag["name"] for tag in TAGS}
    openapi["tags"] = [t for t in TAGS if t["name"] in used] + [{"name": t} for t in sorted(used - described)]
    return openapi


def install(app: FastAPI) -> None:
    """``app.openapi()`` returns the completed document (built once)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
