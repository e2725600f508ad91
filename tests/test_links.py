"""What the API hands a client works as it is: links are absolute (the request's base URL, or
``VTO_PUBLIC_BASE_URL``), and the errors a newcomer meets first say what to do."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from command_api.app import create_app
from tests.api_factories import make_user
from tests.catalog_factories import create_project, upload_product
from tests.test_vto import catalog, job_body

API = "/api/v1"


def test_file_links_are_absolute_under_the_requests_base_url(client: Any, services: Any) -> None:
    owner = make_user(services)
    product = upload_product(client, owner, create_project(client, owner)["id"])
    assert product["url"].startswith("http://testserver/api/v1/files/products/")
    assert client.get(product["url"]).status_code == 200  # usable as it is, no token


def test_file_links_use_the_public_base_url_when_it_is_set(services: Any) -> None:
    services.settings.public_base_url = "https://vto.example.com/"
    with TestClient(create_app(services)) as client:
        owner = make_user(services)
        product = upload_product(client, owner, create_project(client, owner)["id"])
    assert product["url"].startswith("https://vto.example.com/api/v1/files/products/")


def test_a_non_admin_is_told_how_to_become_one(client: Any, services: Any) -> None:
    caller = make_user(services)
    body = {"email": "someone@example.com", "credits": 1, "reason": "x"}
    response = client.post(f"{API}/admin/grants", json=body, headers=caller.headers)
    assert response.status_code == 403
    assert "uv run vto admin add EMAIL" in response.json()["detail"]
    assert response.json()["type"] == "http://testserver/problems/forbidden"


def test_an_unpaid_job_is_told_how_points_are_obtained(client: Any, services: Any) -> None:
    caller = make_user(services)  # no points
    response = client.post(f"{API}/vto/jobs", json=job_body(catalog(client, caller)), headers=caller.headers)
    assert response.status_code == 402
    problem = response.json()
    assert problem["code"] == "insufficient_entitlement"
    assert "POST /api/v1/admin/grants" in problem["detail"]
    assert "this image job" in problem["detail"] and "a image" not in problem["detail"]
    page = client.get("/problems/insufficient_entitlement").text
    assert "/api/v1/admin/grants" in page
