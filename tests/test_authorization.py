"""The catalog's authorization matrix: owner, shared reader, stranger, admin and anonymous
against every catalog endpoint.

Rules (command_api/catalog/access.py): anonymous callers get 401 everywhere but the signed
file links; a shared reader may read a project, its products and results and gets 403 for
changes; anyone who may not see an object at all gets 404, exactly as for an id that does not
exist; collections and assets are private to their owner. Administrators have no special
catalog rights: for the catalog an admin is just another user. A refused request changes
nothing."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from tests.api_factories import Caller, make_user
from tests.catalog_factories import (
    API,
    PROBLEM_JSON,
    create_project,
    image_bytes,
    share,
    snapshot,
    upload_asset,
    upload_product,
)

ROLES = ("anonymous", "stranger", "admin", "reader", "owner")  # refusals first, the owner last


def test_authorization_matrix(client: Any, services: Any) -> None:
    owner, reader, stranger = make_user(services), make_user(services), make_user(services)
    admin, third = make_user(services, admin=True), make_user(services)
    callers: dict[str, Caller | None] = {
        "anonymous": None,
        "stranger": stranger,
        "admin": admin,
        "reader": reader,
        "owner": owner,
    }
    project = create_project(client, owner)
    pid, cid = project["id"], project["collection_id"]
    product = upload_product(client, owner, pid)
    asset = upload_asset(client, owner)
    share(client, owner, pid, reader)

    def upload() -> dict[str, Any]:
        return {"files": {"file": ("a.png", image_bytes(), "image/png")}}

    everyone = {"anonymous": 401, "stranger": 200, "admin": 200, "reader": 200, "owner": 200}
    created = {**everyone, "stranger": 201, "admin": 201, "reader": 201, "owner": 201}
    readable = {"anonymous": 401, "stranger": 404, "admin": 404, "reader": 200, "owner": 200}
    owner_only = {"anonymous": 401, "stranger": 404, "admin": 404, "reader": 404, "owner": 200}
    writable = {"anonymous": 401, "stranger": 404, "admin": 404, "reader": 403, "owner": 200}
    matrix: list[tuple[str, str, Any, dict[str, int]]] = [
        ("POST", "/collections", lambda: {"json": {"name": "mine"}}, created),
        ("GET", "/collections", dict, everyone),
        ("PATCH", f"/collections/{cid}", lambda: {"json": {"name": "renamed"}}, owner_only),
        (
            "POST",
            "/projects",
            lambda: {"json": {"collection_id": cid, "name": "p"}},
            {**owner_only, "owner": 201},
        ),
        ("GET", "/projects", dict, everyone),
        ("GET", f"/projects?collection_id={cid}", dict, readable),
        ("GET", f"/projects/{pid}", dict, readable),
        ("PATCH", f"/projects/{pid}", lambda: {"json": {"marketing_copy": "new"}}, writable),
        (
            "POST",
            f"/projects/{pid}/shares",
            lambda: {"json": {"email": third.user.email}},
            {**writable, "owner": 201},
        ),
        ("DELETE", f"/projects/{pid}/shares/{third.id}", dict, {**writable, "owner": 204}),
        (
            "POST",
            f"/projects/{pid}/products",
            lambda: {"data": {"category": "top", "side": "back"}, **upload()},
            {**writable, "owner": 201},
        ),
        ("GET", f"/projects/{pid}/products", dict, readable),
        ("POST", "/assets", lambda: {"data": {"type": "background"}, **upload()}, created),
        ("GET", "/assets", dict, everyone),
        ("GET", f"/assets/{asset['id']}", dict, owner_only),
        # The signed link is the credential: anyone holding it may fetch, nobody without it.
        ("GET", product["url"].removeprefix(API), dict, {role: 200 for role in ROLES}),
        ("GET", f"/files/products/{product['id']}.png", dict, {role: 403 for role in ROLES}),
    ]
    failures = []
    for method, path, kwargs, expected in matrix:
        state = snapshot(services)
        for role in ROLES:
            caller = callers[role]
            headers = caller.headers if caller else {}
            response = client.request(method, API + path, headers=headers, **kwargs())
            got = response.status_code
            if got != expected[role]:
                failures.append(f"{role:9} {method} {path}: {got} != {expected[role]} {response.text[:120]}")
            if got >= 400:
                if response.headers.get("content-type") != PROBLEM_JSON:
                    failures.append(f"{role:9} {method} {path}: not a problem response")
                if snapshot(services) != state:
                    failures.append(f"{role:9} {method} {path}: refused, yet something changed")
            else:
                state = snapshot(services)
    assert not failures, "\n".join(failures)


def test_refusals_do_not_reveal_existence(client: Any, services: Any) -> None:
    owner, stranger, reader = make_user(services), make_user(services), make_user(services)
    project = create_project(client, owner)
    asset = upload_asset(client, owner)
    share(client, owner, project["id"], reader)
    pairs = [
        (f"/projects/{project['id']}", f"/projects/{uuid4()}"),
        (f"/projects/{project['id']}/products", f"/projects/{uuid4()}/products"),
        (f"/assets/{asset['id']}", f"/assets/{uuid4()}"),
        (f"/projects?collection_id={project['collection_id']}", f"/projects?collection_id={uuid4()}"),
    ]
    for existing, missing in pairs:
        seen = client.get(API + existing, headers=stranger.headers)
        unseen = client.get(API + missing, headers=stranger.headers)
        assert (seen.status_code, seen.json()) == (unseen.status_code, unseen.json()) == (404, unseen.json())
    # Writes too: the stranger cannot tell a real project from a made-up one.
    for pid in (project["id"], str(uuid4())):
        response = client.patch(f"{API}/projects/{pid}", json={"name": "x"}, headers=stranger.headers)
        assert (response.status_code, response.json()["detail"]) == (404, "project not found")
