"""Fuzzing the HTTP API from its OpenAPI schema (schemathesis): every operation, as a user and
as an administrator, with generated valid and invalid input. No answer may be a 5xx, and every
answer must match the schema (status, content type, body).

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
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from command_api.app import create_app
from infra.settings import Settings
from tests.api_factories import make_user
from tests.conftest import fresh_database

EXAMPLES = int(os.environ.get("VTO_FUZZ_EXAMPLES", "15"))
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]


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
