"""/projects: create, read, list, patch; sharing; counts from the project_stats read model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import text

from tests.api_factories import make_user
from tests.catalog_factories import (
    API,
    assert_problem,
    create_collection,
    create_project,
    png_upload,
    share,
    snapshot,
    upload_product,
)


def test_create_read_list_and_patch_projects(client: Any, services: Any) -> None:
    owner, other = make_user(services), make_user(services)
    spring, autumn = create_collection(client, owner, "Spring"), create_collection(client, owner, "Autumn")
    created = client.post(
        f"{API}/projects",
        json={"collection_id": spring["id"], "name": "Shirts", "marketing_copy": "Linen."},
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text
    project = created.json()
    assert {k: project[k] for k in ("collection_id", "owner_id", "name", "marketing_copy")} == {
        "collection_id": spring["id"],
        "owner_id": str(owner.id),
        "name": "Shirts",
        "marketing_copy": "Linen.",
    }
    assert (
        project["shared_user_ids"],
        project["image_count"],
        project["video_count"],
        project["products"],
    ) == (
        [],
        0,
        0,
        [],
    )
    for i in range(3):
        create_project(client, owner, spring["id"], f"s{i}")
    create_project(client, owner, autumn["id"], "a0")
    create_project(client, other)  # someone else's: never listed

    read = client.get(f"{API}/projects/{project['id']}", headers=owner.headers)
    assert read.status_code == 200 and read.json() == project

    everything = client.get(f"{API}/projects", headers=owner.headers).json()
    assert [p["name"] for p in everything["items"]] == ["a0", "s2", "s1", "s0", "Shirts"]
    page = client.get(
        f"{API}/projects", params={"collection_id": spring["id"], "limit": 3}, headers=owner.headers
    )
    assert [p["name"] for p in page.json()["items"]] == ["s2", "s1", "s0"]
    rest = client.get(
        f"{API}/projects",
        params={"collection_id": spring["id"], "limit": 3, "cursor": page.json()["next_cursor"]},
        headers=owner.headers,
    ).json()
    assert ([p["name"] for p in rest["items"]], rest["next_cursor"]) == (["Shirts"], None)

    patched = client.patch(
        f"{API}/projects/{project['id']}",
        json={"marketing_copy": None, "name": "Tees"},
        headers=owner.headers,
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["marketing_copy"]) == ("Tees", None)

    # Someone else's collection, or none at all: 404 either way.
    for collection_id in (create_collection(client, other)["id"], str(uuid4())):
        assert_problem(
            client.post(
                f"{API}/projects", json={"collection_id": collection_id, "name": "x"}, headers=owner.headers
            ),
            404,
        )
        assert_problem(
            client.get(f"{API}/projects", params={"collection_id": collection_id}, headers=owner.headers), 404
        )


def test_counts_come_from_the_project_stats_read_model(client: Any, services: Any) -> None:
    owner = make_user(services)
    project = create_project(client, owner)
    with services.sessions() as session:
        session.execute(
            text("INSERT INTO project_stats (project_id, image_count, video_count) VALUES (:p, 7, 2)"),
            {"p": project["id"]},
        )
        session.commit()
    product = upload_product(client, owner, project["id"])
    body = client.get(f"{API}/projects/{project['id']}", headers=owner.headers).json()
    assert (body["image_count"], body["video_count"]) == (7, 2)
    assert [p["id"] for p in body["products"]] == [product["id"]]
    listed = client.get(f"{API}/projects", headers=owner.headers).json()["items"][0]
    assert (listed["image_count"], listed["video_count"], len(listed["products"])) == (7, 2, 1)


def test_sharing_gives_read_access_only(client: Any, services: Any) -> None:
    owner, reader, stranger = make_user(services), make_user(services), make_user(services)
    project = create_project(client, owner)
    pid, cid = project["id"], project["collection_id"]
    shares = f"{API}/projects/{pid}/shares"

    first = client.post(shares, json={"email": reader.user.email.upper()}, headers=owner.headers)
    assert first.status_code == 201, first.text
    assert first.json()["shared_user_ids"] == [str(reader.id)]
    again = client.post(shares, json={"email": reader.user.email}, headers=owner.headers)
    assert again.status_code == 200 and again.json()["shared_user_ids"] == [str(reader.id)]

    # The reader sees it (alone, and within its collection), but may not change it.
    assert client.get(f"{API}/projects/{pid}", headers=reader.headers).status_code == 200
    assert [p["id"] for p in client.get(f"{API}/projects", headers=reader.headers).json()["items"]] == [pid]
    in_collection = client.get(f"{API}/projects", params={"collection_id": cid}, headers=reader.headers)
    assert [p["id"] for p in in_collection.json()["items"]] == [pid]
    before = snapshot(services)
    assert_problem(
        client.patch(f"{API}/projects/{pid}", json={"name": "x"}, headers=reader.headers), 403, "forbidden"
    )
    assert_problem(client.post(shares, json={"email": stranger.user.email}, headers=reader.headers), 403)
    assert_problem(client.delete(f"{shares}/{owner.id}", headers=reader.headers), 403)
    # The stranger sees nothing at all.
    assert_problem(client.get(f"{API}/projects/{pid}", headers=stranger.headers), 404)
    assert_problem(
        client.get(f"{API}/projects", params={"collection_id": cid}, headers=stranger.headers), 404
    )
    assert client.get(f"{API}/projects", headers=stranger.headers).json()["items"] == []
    # Targets must be live users other than the owner.
    assert_problem(
        client.post(shares, json={"email": "nobody@example.com"}, headers=owner.headers),
        404,
        "user_not_found",
    )
    assert_problem(client.post(shares, json={"email": owner.user.email}, headers=owner.headers), 422)
    assert_problem(client.delete(f"{shares}/{stranger.id}", headers=owner.headers), 404, "share_not_found")
    assert snapshot(services) == before

    gone = make_user(services)
    with services.sessions() as session:
        session.execute(
            text("UPDATE users SET deleted_at = :t WHERE id = :u"), {"t": datetime.now(UTC), "u": gone.id}
        )
        session.commit()
    assert_problem(client.post(shares, json={"email": gone.user.email}, headers=owner.headers), 404)

    # A reader may leave; the owner may remove anyone.
    assert client.delete(f"{shares}/{reader.id}", headers=reader.headers).status_code == 204
    assert_problem(client.get(f"{API}/projects/{pid}", headers=reader.headers), 404)
    share(client, owner, pid, reader)
    share(client, owner, pid, stranger)
    assert client.get(f"{API}/projects/{pid}", headers=owner.headers).json()["shared_user_ids"] == [
        str(reader.id),
        str(stranger.id),
    ]
    removed = client.delete(f"{shares}/{reader.id}", headers=owner.headers)
    assert removed.status_code == 204 and removed.content == b""
    assert client.get(f"{API}/projects/{pid}", headers=owner.headers).json()["shared_user_ids"] == [
        str(stranger.id)
    ]


def test_share_roles_viewer_by_default_editor_on_request_and_only_the_owner_manages_them(
    client: Any, services: Any
) -> None:
    owner, viewer, editor, third = (make_user(services) for _ in range(4))
    project = create_project(client, owner)
    pid = project["id"]
    shares = f"{API}/projects/{pid}/shares"

    first = client.post(shares, json={"email": viewer.user.email}, headers=owner.headers)
    assert first.status_code == 201 and first.json()["shares"] == [
        {"user_id": str(viewer.id), "role": "viewer"}
    ]
    made = client.post(shares, json={"email": editor.user.email, "role": "editor"}, headers=owner.headers)
    assert made.status_code == 201
    assert made.json()["shares"] == [
        {"user_id": str(viewer.id), "role": "viewer"},
        {"user_id": str(editor.id), "role": "editor"},
    ]
    assert made.json()["shared_user_ids"] == [str(viewer.id), str(editor.id)]

    # A viewer adds nothing; an editor adds products, seen by everyone on the project.
    before = snapshot(services)
    assert_problem(
        client.post(
            f"{API}/projects/{pid}/products",
            data={"category": "top", "side": "front"},
            files=png_upload(),
            headers=viewer.headers,
        ),
        403,
        "forbidden",
    )
    assert snapshot(services) == before
    added = upload_product(client, editor, pid)
    listed = client.get(f"{API}/projects/{pid}/products", headers=viewer.headers).json()["items"]
    assert [p["id"] for p in listed] == [added["id"]]

    # Only the owner changes the project and its shares: an editor gets 403, and nothing changes.
    before = snapshot(services)
    for role_body in ({"email": third.user.email}, {"email": third.user.email, "role": "editor"}):
        refused = client.post(shares, json=role_body, headers=editor.headers)
        assert_problem(refused, 403, "forbidden")
        assert refused.json()["detail"] == "only the project's owner may change the project or its shares"
    assert_problem(
        client.post(shares, json={"email": viewer.user.email, "role": "editor"}, headers=viewer.headers), 403
    )
    assert_problem(
        client.post(shares, json={"email": editor.user.email, "role": "viewer"}, headers=editor.headers), 403
    )
    assert_problem(client.delete(f"{shares}/{viewer.id}", headers=editor.headers), 403, "forbidden")
    assert_problem(client.delete(f"{shares}/{editor.id}", headers=viewer.headers), 403, "forbidden")
    assert_problem(client.patch(f"{API}/projects/{pid}", json={"name": "x"}, headers=editor.headers), 403)
    assert snapshot(services) == before

    # Sharing again changes the role (200), and takes effect at once.
    demoted = client.post(shares, json={"email": editor.user.email, "role": "viewer"}, headers=owner.headers)
    assert demoted.status_code == 200
    assert demoted.json()["shares"][1] == {"user_id": str(editor.id), "role": "viewer"}
    assert_problem(
        client.post(
            f"{API}/projects/{pid}/products",
            data={"category": "top", "side": "back"},
            files=png_upload(),
            headers=editor.headers,
        ),
        403,
    )
    promoted = client.post(shares, json={"email": viewer.user.email, "role": "editor"}, headers=owner.headers)
    assert promoted.status_code == 200
    assert promoted.json()["shares"][0] == {"user_id": str(viewer.id), "role": "editor"}
    same = client.post(shares, json={"email": viewer.user.email, "role": "editor"}, headers=owner.headers)
    assert same.status_code == 200 and same.json()["shares"] == promoted.json()["shares"]
    upload_product(client, viewer, pid, side="back")

    # Any shared user may leave.
    assert client.delete(f"{shares}/{viewer.id}", headers=viewer.headers).status_code == 204
    assert client.get(f"{API}/projects/{pid}", headers=owner.headers).json()["shares"] == [
        {"user_id": str(editor.id), "role": "viewer"}
    ]


def test_project_bad_input_changes_nothing(client: Any, services: Any) -> None:
    owner = make_user(services)
    project = create_project(client, owner)
    pid, cid = project["id"], project["collection_id"]
    before = snapshot(services)
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", "/projects", {"json": {"name": "x"}}, 422),
        ("POST", "/projects", {"json": {"collection_id": cid}}, 422),
        ("POST", "/projects", {"json": {"collection_id": "nope", "name": "x"}}, 422),
        ("POST", "/projects", {"json": {"collection_id": cid, "name": 5}}, 422),
        (
            "POST",
            "/projects",
            {"json": {"collection_id": cid, "name": "x", "marketing_copy": "m" * 20_001}},
            422,
        ),
        ("POST", "/projects", {"json": {"collection_id": cid, "name": "x", "shared_user_ids": []}}, 422),
        ("POST", "/projects", {"content": b"name=x", "headers": {"content-type": "text/plain"}}, 422),
        ("POST", "/projects", {"content": b"{", "headers": {"content-type": "application/json"}}, 422),
        (
            "POST",
            "/projects",
            {"json": {"collection_id": cid, "name": "x", "marketing_copy": "m" * 300_000}},
            413,
        ),
        ("GET", "/projects/123", {}, 422),
        ("GET", "/projects?collection_id=nope", {}, 422),
        ("GET", "/projects?cursor=12345", {}, 400),
        ("PATCH", f"/projects/{pid}", {"json": {}}, 422),
        ("PATCH", f"/projects/{pid}", {"json": {"name": None}}, 422),
        ("PATCH", f"/projects/{pid}", {"json": {"collection_id": cid}}, 422),
        ("POST", f"/projects/{pid}/shares", {"json": {}}, 422),
        ("POST", f"/projects/{pid}/shares", {"json": {"email": "not-an-email"}}, 422),
        ("POST", f"/projects/{pid}/shares", {"json": {"email": ["a@example.com"]}}, 422),
        ("POST", f"/projects/{pid}/shares", {"json": {"email": "a@example.com", "role": "owner"}}, 422),
        ("POST", f"/projects/{pid}/shares", {"json": {"email": "a@example.com", "role": None}}, 422),
        ("DELETE", f"/projects/{pid}/shares/not-a-uuid", {}, 422),
    ]
    for method, path, kwargs, status in cases:
        headers = {**owner.headers, **kwargs.pop("headers", {})}
        assert_problem(client.request(method, API + path, headers=headers, **kwargs), status)
    assert snapshot(services) == before
