"""The catalog's authorization matrix: owner, editor, viewer, stranger, admin and anonymous
against every catalog endpoint and job orders.

Rules (command_api/catalog/access.py): anonymous callers get 401 everywhere but the signed
file links; a viewer (a project shared with the default role) may read a project, its
products and results and gets 403 for changes; an editor may also add products and order jobs
in it (charged to the editor), and gets 403 for changes to the project itself and its shares;
anyone who may not see an object at all gets 404, exactly as for an id that does not exist;
collections and assets are private to their owner. Administrators have no special catalog
rights: for the catalog an admin is just another user. A refused request changes nothing."""

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

ROLES = ("anonymous", "stranger", "admin", "viewer", "editor", "owner")  # refusals first, the owner last


def test_authorization_matrix(client: Any, services: Any) -> None:
    owner, viewer, editor = make_user(services), make_user(services), make_user(services)
    admin, stranger, third = make_user(services, admin=True), make_user(services), make_user(services)
    callers: dict[str, Caller | None] = {
        "anonymous": None,
        "stranger": stranger,
        "admin": admin,
        "viewer": viewer,
        "editor": editor,
        "owner": owner,
    }
    project = create_project(client, owner)
    pid, cid = project["id"], project["collection_id"]
    product = upload_product(client, owner, pid)
    asset = upload_asset(client, owner)
    share(client, owner, pid, viewer)
    share(client, owner, pid, editor, role="editor")
    share(client, owner, pid, third)

    def upload() -> dict[str, Any]:
        return {"files": {"file": ("a.png", image_bytes(), "image/png")}}

    everyone = {"anonymous": 401, "stranger": 200, "admin": 200, "viewer": 200, "editor": 200, "owner": 200}
    created = {**everyone, "stranger": 201, "admin": 201, "viewer": 201, "editor": 201, "owner": 201}
    readable = {"anonymous": 401, "stranger": 404, "admin": 404, "viewer": 200, "editor": 200, "owner": 200}
    owner_only = {"anonymous": 401, "stranger": 404, "admin": 404, "viewer": 404, "editor": 404, "owner": 200}
    # the project itself and its shares: the owner; every shared user gets 403
    writable = {"anonymous": 401, "stranger": 404, "admin": 404, "viewer": 403, "editor": 403, "owner": 200}
    # adding to the project: the owner and its editors
    contributable = {**writable, "editor": 201, "owner": 201}
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
            {**writable, "owner": 202},
        ),
        ("GET", f"/projects/{pid}/invitations", dict, writable),
        ("PATCH", f"/projects/{pid}/shares/{viewer.id}", lambda: {"json": {"role": "viewer"}}, writable),
        ("DELETE", f"/projects/{pid}/shares/{third.id}", dict, {**writable, "owner": 204}),
        (
            "POST",
            f"/projects/{pid}/products",
            lambda: {"data": {"category": "top", "side": "back"}, **upload()},
            contributable,
        ),
        ("GET", f"/projects/{pid}/products", dict, readable),
        ("POST", "/assets", lambda: {"data": {"type": "background"}, **upload()}, created),
        ("GET", "/assets", dict, everyone),
        ("GET", f"/assets/{asset['id']}", dict, owner_only),
        # The signed link is the credential: anyone holding it may fetch, nobody without it.
        ("GET", product["url"].removeprefix(f"http://testserver{API}"), dict, {role: 200 for role in ROLES}),
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
    share(client, owner, project["id"], reader, role="editor")
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


def test_who_may_order_jobs_in_a_project(client: Any, services: Any) -> None:
    """Attack: a viewer ordered jobs into the owner's project (results in the owner's gallery
    and counts). Only the owner and editors order; each pays for their own jobs."""
    owner, viewer, editor = make_user(services), make_user(services), make_user(services)
    admin, stranger = make_user(services, admin=True), make_user(services)
    callers: dict[str, Caller | None] = {
        "anonymous": None,
        "stranger": stranger,
        "admin": admin,
        "viewer": viewer,
        "editor": editor,
        "owner": owner,
    }
    project = create_project(client, owner)
    product = upload_product(client, owner, project["id"])
    share(client, owner, project["id"], viewer)
    share(client, owner, project["id"], editor, role="editor")
    models = {}
    for role, caller in callers.items():
        if caller is not None:
            services.ledger.grant_credits(caller.id, 5, "test")
            models[role] = upload_asset(client, caller)["id"]
    expected = {"anonymous": 401, "stranger": 404, "admin": 404, "viewer": 403, "editor": 202, "owner": 202}
    for role in ROLES:
        caller = callers[role]
        body = {
            "project_id": project["id"],
            "kind": "image",
            "product_ids": [product["id"]],
            "model_asset_id": models.get(role, models["owner"]),
        }
        position = services.ledger.position()
        response = client.post(f"{API}/vto/jobs", json=body, headers=caller.headers if caller else {})
        assert response.status_code == expected[role], (role, response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"] == PROBLEM_JSON
            assert services.ledger.position() == position, f"{role}: refused, yet the ledger changed"
        else:
            assert response.json()["charge"] == {"source": "credit", "amount": 1}
            # the job reads back for its requester and for the project's owner
            job = client.get(f"{API}/vto/jobs/{response.json()['id']}", headers=owner.headers)
            assert job.status_code == 200 and job.json()["project_id"] == project["id"]
    assert client.post(f"{API}/vto/jobs", json={}, headers=viewer.headers).status_code == 422
    refused = client.post(
        f"{API}/vto/jobs",
        json={
            "project_id": project["id"],
            "kind": "image",
            "product_ids": [product["id"]],
            "model_asset_id": models["viewer"],
        },
        headers=viewer.headers,
    )
    assert refused.json()["detail"] == "the project is shared with you for reading only"
    credits = {
        role: client.get(f"{API}/points", headers=caller.headers).json()["credit"]
        for role, caller in callers.items()
        if caller is not None
    }
    # each job was charged to whoever ordered it: the editor's to the editor, not the owner
    assert credits == {"stranger": 5, "admin": 5, "viewer": 5, "editor": 4, "owner": 4}
