"""Fuzzing the HTTP API from its OpenAPI schema (schemathesis): every operation, as a user and
as an administrator, with generated valid and invalid input. No answer may be a 5xx, and every
answer must match the schema (a documented status, content type, body).

The example count per operation is bounded (``VTO_FUZZ_EXAMPLES``, default 15) so that the
test command stays fast; raise it for a longer local run."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import text

from command_api.app import create_app
from infra.settings import Settings
from tests.api_factories import make_user
from tests.conftest import fresh_database

EXAMPLES = int(os.environ.get("VTO_FUZZ_EXAMPLES", "15"))
# status_code_conformance: every status an operation answers is documented for it.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_services(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One database and one app for the whole module (each operation is its own test)."""
    from command_api.services import build_services

    settings = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("fuzz") / "data")  # type: ignore[call-arg]
    with fresh_database(pg_server_url) as url:
        built = build_services(settings, url, migrate=False)
        try:
            yield built
        finally:
            built.close()


@pytest.fixture(scope="module")
def fuzz_client(fuzz_services: Any) -> Iterator[Any]:
    with TestClient(create_app(fuzz_services)) as test_client:
        yield test_client


@pytest.fixture
def caller_headers(fuzz_services: Any) -> Callable[[bool], dict[str, str]]:
    """Headers of a fresh caller per example (an example may delete the account or end its
    sessions), signed in with a provider just now: its token has a live session (logout, the
    session routes and account deletion take their real paths)."""

    def make(admin: bool) -> dict[str, str]:
        return make_user(fuzz_services, admin=admin, sign_in="google").headers

    return make


# The schema of an app built without services (the routes are the same for every app); each
# example then runs against the test's own app.
schema = schemathesis.openapi.from_dict(create_app().openapi())

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@schema.parametrize()
@FUZZ
def test_api_as_a_user(case: Any, fuzz_client: Any, caller_headers: Callable[[bool], dict[str, str]]) -> None:
    case.call_and_validate(app=fuzz_client.app, headers=caller_headers(False), checks=CHECKS)


@schema.parametrize()
@FUZZ
def test_api_as_an_admin(
    case: Any, fuzz_client: Any, caller_headers: Callable[[bool], dict[str, str]]
) -> None:
    case.call_and_validate(app=fuzz_client.app, headers=caller_headers(True), checks=CHECKS)


# The routes of issue 21 (deletion, invitations, uploads) on objects that exist: each example
# gets a fresh caller owning what its path names (or invited to another owner's project), and
# the generated path ids are replaced by those, so that deletes delete and invitations are
# answered.
OWNED_OBJECTS = schema.include(
    name=[
        "POST /api/v1/assets",
        "DELETE /api/v1/assets/{asset_id}",
        "DELETE /api/v1/collections/{collection_id}",
        "DELETE /api/v1/projects/{project_id}",
        "POST /api/v1/projects/{project_id}/products",
        "DELETE /api/v1/projects/{project_id}/products/{product_id}",
        "POST /api/v1/projects/{project_id}/shares",
        "PATCH /api/v1/projects/{project_id}/shares/{user_id}",
        "GET /api/v1/projects/{project_id}/invitations",
        "DELETE /api/v1/projects/{project_id}/invitations/{invitation_id}",
        "GET /api/v1/invitations",
        "POST /api/v1/invitations/{invitation_id}/accept",
        "POST /api/v1/invitations/{invitation_id}/decline",
    ]
)
# Each example builds the objects its path names: fewer examples than the rest.
OBJECT_EXAMPLES = max(3, EXAMPLES // 3)


def owned_objects(
    services: Any, client: Any, names: set[str], invited: bool
) -> tuple[dict[str, str], dict[str, str]]:
    """Headers of a fresh caller (address verified) and the ids ``names`` of what they own (a
    collection, a project with a product, a member and an open invitation, an asset) or, when
    ``invited``, of an invitation to them from another owner. Only what the path names is made."""
    from tests.catalog_factories import create_project, invite, upload_asset, upload_product, verify_email

    caller = make_user(services)
    verify_email(services, caller)
    if invited:
        other = make_user(services)
        elsewhere = create_project(client, other)["id"]
        return caller.headers, {
            "invitation_id": invite(client, other, elsewhere, caller.user.email).json()["id"]
        }
    ids: dict[str, str] = {}
    if "asset_id" in names:
        ids["asset_id"] = upload_asset(client, caller)["id"]
    if names & {"collection_id", "project_id"}:
        project = create_project(client, caller)
        ids.update(collection_id=project["collection_id"], project_id=project["id"])
        if "product_id" in names:
            ids["product_id"] = upload_product(client, caller, project["id"])["id"]
        if "invitation_id" in names:
            ids["invitation_id"] = invite(client, caller, project["id"], "invitee@example.com").json()["id"]
        if "user_id" in names:
            member = make_user(services)
            with services.sessions() as session:
                session.execute(
                    text("INSERT INTO project_shares (project_id, user_id, role) VALUES (:p, :u, 'viewer')"),
                    {"p": project["id"], "u": member.id},
                )
                session.commit()
            ids["user_id"] = str(member.id)
    return caller.headers, ids


@OWNED_OBJECTS.parametrize()
@settings(FUZZ, max_examples=OBJECT_EXAMPLES)
def test_new_routes_on_objects_that_exist(case: Any, fuzz_client: Any, fuzz_services: Any) -> None:
    names = set(case.path_parameters or {})
    invited = case.operation.path.startswith("/api/v1/invitations")
    headers, ids = owned_objects(fuzz_services, fuzz_client, names, invited)
    for name in names & set(ids):
        case.path_parameters[name] = ids[name]
    case.call_and_validate(app=fuzz_client.app, headers=headers, checks=CHECKS)
