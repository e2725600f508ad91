"""The API's reference, served by the app itself and complete: Swagger UI and ReDoc load
every asset from the app (no CDN); each problem's ``type`` is the URL of a page the app serves
for its code; every operation documents the statuses it can answer, each with problem
examples; every tag is described; multipart bodies have examples."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from command_api.app import create_app
from command_api.reference.openapi import TAGS, operations
from command_api.reference.problem_types import DESCRIPTIONS, catalog, statuses

SPEC = create_app().openapi()


class Assets(HTMLParser):
    """The URLs a page loads: scripts, stylesheets, icons, and the URLs its inline scripts name."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href", "spec-url"):
            if found.get(name) and tag in ("script", "link", "img", "redoc"):
                self.urls.append(str(found[name]))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:  # Swagger UI's set-up names the document and its redirect page
            self.urls += re.findall(r"""\b(?:url|oauth2RedirectUrl)\s*:\s*['"]([^'"]+)['"]""", data)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_load_every_asset_from_the_app(client: Any, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert "cdn" not in response.text.lower()
    parser = Assets()
    parser.feed(response.text)
    urls = {url.replace("window.location.origin + ", "") for url in parser.urls}
    assert any(url.endswith(".js") for url in urls), urls
    assert "/openapi.json" in urls, urls
    for url in urls:
        parts = urlsplit(url)
        assert not parts.netloc, f"{page} loads {url} from elsewhere"
        assert client.get(url).status_code == 200, url


def test_swagger_ui_names_the_openapi_document_it_loads(client: Any) -> None:
    assert "url: '/openapi.json'" in client.get("/docs").text
    assert client.get("/openapi.json").json()["info"]["title"] == "VTO API"


def test_every_code_the_api_answers_with_is_described() -> None:
    assert sorted(set(statuses()) - set(DESCRIPTIONS)) == []


def test_every_code_an_operation_names_is_described_and_every_operation_named_exists() -> None:
    from command_api.reference.openapi import BY_DEPENDENCY, BY_OPERATION

    named = {p if isinstance(p, str) else p[0] for ps in BY_OPERATION.values() for p in ps}
    named |= {code for codes in BY_DEPENDENCY.values() for code in codes}
    assert sorted(named - set(catalog())) == []
    existing = {f"{m.upper()} {path}" for path, item in SPEC["paths"].items() for m in item}
    assert sorted(set(BY_OPERATION) - existing) == []


def test_each_problem_type_is_a_page_of_the_app_describing_its_code(client: Any) -> None:
    missing = client.get("/api/v1/users/me")  # no token
    assert missing.status_code == 401
    problem = missing.json()
    assert problem["type"] == "http://testserver/problems/unauthorized"
    page = client.get(urlsplit(problem["type"]).path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "unauthorized" in page.text and "401" in page.text and "Authorization: Bearer" in page.text
    index = client.get("/problems")
    assert all(f"/problems/{code}" in index.text for code in catalog())
    unknown = client.get("/problems/no_such_code")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "not_found"


def test_the_public_base_url_prefixes_problem_types(services: Any) -> None:
    services.settings.public_base_url = "https://vto.example.com/"
    with TestClient(create_app(services)) as client:
        assert (
            client.get("/api/v1/users/me").json()["type"] == "https://vto.example.com/problems/unauthorized"
        )


def test_every_status_of_every_operation_has_problem_examples_of_that_status() -> None:
    types = catalog()
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                examples = response["content"]["application/problem+json"]["examples"]
                assert examples, (method, path, status)
                for code, example in examples.items():
                    assert types[code].status == int(status), (method, path, status, code)
                    assert example["value"]["type"].endswith(f"/problems/{code}")
                    assert f"`{code}`" in response["description"]


def test_the_operations_that_want_a_token_document_401_and_admin_ones_403() -> None:
    app = create_app()
    for route in operations(app):
        responses = SPEC["paths"][route.path_format][next(iter(route.methods)).lower()]["responses"]
        if route.path_format.startswith(("/api/v1/vto", "/api/v1/points", "/api/v1/admin", "/api/v1/users")):
            assert "401" in responses, route.path_format
        if route.path_format.startswith("/api/v1/admin") or route.path_format == "/api/v1/points/refund":
            assert "403" in responses, route.path_format
    job = SPEC["paths"]["/api/v1/vto/jobs/{job_id}"]["get"]["responses"]
    assert {"401", "404"} <= set(job)


def test_every_tag_is_described() -> None:
    used = {tag for item in SPEC["paths"].values() for op in item.values() for tag in op.get("tags", [])}
    described = {tag["name"]: tag.get("description") for tag in SPEC["tags"]}
    assert used <= {name for name, text in described.items() if text}
    assert [t["name"] for t in SPEC["tags"]] == [t["name"] for t in TAGS if t["name"] in used]


def test_multipart_bodies_have_examples() -> None:
    for path in ("/api/v1/assets", "/api/v1/projects/{project_id}/products"):
        media = SPEC["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        assert media["example"]["file"]
        assert media["encoding"]["file"]["contentType"].startswith("image/")
    product = SPEC["paths"]["/api/v1/projects/{project_id}/products"]["post"]["requestBody"]
    assert product["content"]["multipart/form-data"]["example"]["category"] == "top"


def test_the_end_of_run_check_sees_each_answer_and_flags_an_undocumented_one(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests import openapi_statuses

    assert client.get("/api/v1/vto/jobs/not-a-uuid").status_code == 401  # no token first
    assert ("GET", "/api/v1/vto/jobs/{id}", 401) in openapi_statuses.answered()
    assert not [line for line in openapi_statuses.undocumented() if "/api/v1/vto/jobs/{id}" in line]
    documented = openapi_statuses.documented()
    documented[("GET", "/api/v1/vto/jobs/{id}")].discard(401)
    monkeypatch.setattr(openapi_statuses, "documented", lambda: documented)
    assert "GET /api/v1/vto/jobs/{id}: 401" in openapi_statuses.undocumented()
