"""/projects: create, read, list, patch; sharing by invitation (/invitations); counts from the
project_stats read model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import text

from tests.api_factories import make_user
from tests.catalog_factories import (
    API,
    accept_invitation,
    assert_problem,
    create_collection,
    create_project,
    invite,
    png_upload,
    share,
    snapshot,
    upload_product,
    verify_email,
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

    share(client, owner, pid, reader)
    assert client.get(f"{API}/projects/{pid}", headers=owner.headers).json()["shared_user_ids"] == [
        str(reader.id)
    ]

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
    assert_problem(
        client.patch(f"{shares}/{reader.id}", json={"role": "editor"}, headers=reader.headers), 403
    )
    # The stranger sees nothing at all.
    assert_problem(client.get(f"{API}/projects/{pid}", headers=stranger.headers), 404)
    assert_problem(
        client.get(f"{API}/projects", params={"collection_id": cid}, headers=stranger.headers), 404
    )
    assert client.get(f"{API}/projects", headers=stranger.headers).json()["items"] == []
    assert_problem(client.post(shares, json={"email": owner.user.email}, headers=owner.headers), 422)
    assert_problem(client.delete(f"{shares}/{stranger.id}", headers=owner.headers), 404, "share_not_found")
    assert snapshot(services) == before

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

    share(client, owner, pid, viewer)
    assert client.get(f"{API}/projects/{pid}", headers=owner.headers).json()["shares"] == [
        {"user_id": str(viewer.id), "role": "viewer"}
    ]
    share(client, owner, pid, editor, role="editor")
    made = client.get(f"{API}/projects/{pid}", headers=owner.headers).json()
    assert made["shares"] == [
        {"user_id": str(viewer.id), "role": "viewer"},
        {"user_id": str(editor.id), "role": "editor"},
    ]
    assert made["shared_user_ids"] == [str(viewer.id), str(editor.id)]

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
        client.patch(f"{shares}/{viewer.id}", json={"role": "editor"}, headers=viewer.headers), 403
    )
    assert_problem(
        client.patch(f"{shares}/{editor.id}", json={"role": "viewer"}, headers=editor.headers), 403
    )
    assert_problem(client.delete(f"{shares}/{viewer.id}", headers=editor.headers), 403, "forbidden")
    assert_problem(client.delete(f"{shares}/{editor.id}", headers=viewer.headers), 403, "forbidden")
    assert_problem(client.patch(f"{API}/projects/{pid}", json={"name": "x"}, headers=editor.headers), 403)
    assert_problem(client.get(f"{API}/projects/{pid}/invitations", headers=editor.headers), 403)
    assert snapshot(services) == before

    # The owner changes a member's role (by the id the project shows), and it takes effect at once.
    demoted = client.patch(f"{shares}/{editor.id}", json={"role": "viewer"}, headers=owner.headers)
    assert demoted.status_code == 200, demoted.text
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
    promoted = client.patch(f"{shares}/{viewer.id}", json={"role": "editor"}, headers=owner.headers)
    assert promoted.status_code == 200
    assert promoted.json()["shares"][0] == {"user_id": str(viewer.id), "role": "editor"}
    same = client.patch(f"{shares}/{viewer.id}", json={"role": "editor"}, headers=owner.headers)
    assert same.status_code == 200 and same.json()["shares"] == promoted.json()["shares"]
    upload_product(client, viewer, pid, side="back")
    assert_problem(client.patch(f"{shares}/{third.id}", json={"role": "editor"}, headers=owner.headers), 404)
    # Inviting a member again, once accepted, sets the role of that invitation.
    share(client, owner, pid, viewer, role="viewer")
    assert client.get(f"{API}/projects/{pid}", headers=owner.headers).json()["shares"][0]["role"] == "viewer"

    # Any shared user may leave.
    assert client.delete(f"{shares}/{viewer.id}", headers=viewer.headers).status_code == 204
    assert client.get(f"{API}/projects/{pid}", headers=owner.headers).json()["shares"] == [
        {"user_id": str(editor.id), "role": "viewer"}
    ]


# --- attack 8: sharing as an address-book lookup ---------------------------------------------
INVITATION_FIELDS = {"id", "project_id", "email", "role", "status", "created_at", "expires_at"}


def test_sharing_answers_the_same_for_known_and_unknown_addresses(client: Any, services: Any) -> None:
    """An invitation for any address: the same status and the same fields whether an account
    holds it, holds it deleted, or not; nothing reaches the invitee's list of projects until
    they accept."""
    owner, invitee = make_user(services), make_user(services)
    gone = make_user(services)
    with services.sessions() as session:
        session.execute(
            text("UPDATE users SET deleted_at = :t WHERE id = :u"), {"t": datetime.now(UTC), "u": gone.id}
        )
        session.commit()
    pid = create_project(client, owner)["id"]
    answers = {
        "known": invite(client, owner, pid, invitee.user.email.upper(), "editor"),
        "unknown": invite(client, owner, pid, f"nobody-{uuid4().hex[:8]}@example.com", "editor"),
        "deleted": invite(client, owner, pid, gone.user.email, "editor"),
    }
    shapes = set()
    for what, response in answers.items():
        assert response.status_code == 202, (what, response.text)
        body = response.json()
        assert set(body) == INVITATION_FIELDS, (what, body)
        assert str(invitee.id) not in response.text and str(gone.id) not in response.text
        shapes.add((response.status_code, body["status"], body["role"], body["project_id"]))
    assert shapes == {(202, "pending", "editor", pid)}
    assert answers["known"].json()["email"] == invitee.user.email  # as stored: lower-cased

    # Until the invitee accepts, the project is not theirs to see.
    assert client.get(f"{API}/projects", headers=invitee.headers).json()["items"] == []
    assert_problem(client.get(f"{API}/projects/{pid}", headers=invitee.headers), 404)
    assert client.get(f"{API}/projects/{pid}", headers=owner.headers).json()["shares"] == []

    # The owner sees every pending invitation, known addresses and unknown alike.
    pending = client.get(f"{API}/projects/{pid}/invitations", headers=owner.headers)
    assert pending.status_code == 200
    assert sorted(i["email"] for i in pending.json()["items"]) == sorted(
        a.json()["email"] for a in answers.values()
    )

    # The invitee lists theirs once their address is verified, and accepts: an editor now.
    assert_problem(client.get(f"{API}/invitations", headers=invitee.headers), 403, "email_unverified")
    invitation_id = answers["known"].json()["id"]
    assert_problem(
        client.post(f"{API}/invitations/{invitation_id}/accept", headers=invitee.headers),
        403,
        "email_unverified",
    )
    verify_email(services, invitee)
    mine = client.get(f"{API}/invitations", headers=invitee.headers).json()["items"]
    assert [(i["id"], i["role"], i["project"]["id"], i["invited_by"]["email"]) for i in mine] == [
        (invitation_id, "editor", pid, owner.user.email)
    ]
    other = make_user(services)
    verify_email(services, other)
    assert_problem(client.post(f"{API}/invitations/{invitation_id}/accept", headers=other.headers), 404)
    accepted = accept_invitation(client, invitee, pid)
    assert accepted["shares"] == [{"user_id": str(invitee.id), "role": "editor"}]
    assert [p["id"] for p in client.get(f"{API}/projects", headers=invitee.headers).json()["items"]] == [pid]
    upload_product(client, invitee, pid)  # the editor role works
    assert client.get(f"{API}/invitations", headers=invitee.headers).json()["items"] == []
    again = client.post(f"{API}/invitations/{invitation_id}/accept", headers=invitee.headers)
    assert_problem(again, 404, "invitation_not_found")
    assert len(client.get(f"{API}/projects/{pid}/invitations", headers=owner.headers).json()["items"]) == 2


def test_an_invitee_declines_and_an_owner_revokes(client: Any, services: Any) -> None:
    owner, invitee = make_user(services), make_user(services)
    verify_email(services, invitee)
    first, second = create_project(client, owner)["id"], create_project(client, owner, name="Second")["id"]
    declined = invite(client, owner, first, invitee.user.email).json()
    revoked = invite(client, owner, second, invitee.user.email).json()
    mine = client.get(f"{API}/invitations", headers=invitee.headers).json()["items"]
    assert {i["id"] for i in mine} == {declined["id"], revoked["id"]}

    response = client.post(f"{API}/invitations/{declined['id']}/decline", headers=invitee.headers)
    assert response.status_code == 204
    assert client.get(f"{API}/projects/{first}/invitations", headers=owner.headers).json()["items"] == []
    gone = client.delete(f"{API}/projects/{second}/invitations/{revoked['id']}", headers=owner.headers)
    assert gone.status_code == 204
    assert_problem(
        client.delete(f"{API}/projects/{second}/invitations/{revoked['id']}", headers=owner.headers), 404
    )
    assert client.get(f"{API}/invitations", headers=invitee.headers).json()["items"] == []
    for invitation in (declined, revoked):
        refused = client.post(f"{API}/invitations/{invitation['id']}/accept", headers=invitee.headers)
        assert_problem(refused, 404, "invitation_not_found")
    assert client.get(f"{API}/projects", headers=invitee.headers).json()["items"] == []
    # Another owner's project: 404 for its invitations, as for the project itself.
    stranger = make_user(services)
    assert_problem(client.get(f"{API}/projects/{first}/invitations", headers=stranger.headers), 404)
    assert_problem(
        client.delete(f"{API}/projects/{first}/invitations/{declined['id']}", headers=stranger.headers), 404
    )


def test_an_invitation_expires(client: Any, services: Any) -> None:
    owner, invitee = make_user(services), make_user(services)
    verify_email(services, invitee)
    pid = create_project(client, owner)["id"]
    invitation = invite(client, owner, pid, invitee.user.email).json()
    with services.sessions() as session:
        session.execute(
            text("UPDATE project_invitations SET expires_at = now() - interval '1 second' WHERE id = :i"),
            {"i": invitation["id"]},
        )
        session.commit()
    assert client.get(f"{API}/invitations", headers=invitee.headers).json()["items"] == []
    refused = client.post(f"{API}/invitations/{invitation['id']}/accept", headers=invitee.headers)
    assert_problem(refused, 404, "invitation_not_found")
    (listed,) = client.get(f"{API}/projects/{pid}/invitations", headers=owner.headers).json()["items"]
    assert listed["status"] == "expired"
    renewed = invite(client, owner, pid, invitee.user.email).json()  # inviting again renews it
    assert renewed["id"] == invitation["id"] and renewed["status"] == "pending"
    accept_invitation(client, invitee, pid)


def test_invitations_are_rate_limited_per_account(client: Any, services: Any) -> None:
    owner = make_user(services)
    pid = create_project(client, owner)["id"]
    allowed = services.settings.share_invitations_per_window
    for index in range(allowed):
        assert invite(client, owner, pid, f"guess-{index}@example.com").status_code == 202
    before = snapshot(services)
    refused = invite(client, owner, pid, "one-more@example.com")
    assert_problem(refused, 429, "too_many_invitations")
    assert 1 <= int(refused.headers["Retry-After"]) <= services.settings.share_invitation_window_s
    assert snapshot(services) == before
    # Another owner has invitations of their own.
    other = make_user(services)
    assert (
        invite(client, other, create_project(client, other)["id"], "one-more@example.com").status_code == 202
    )


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
        ("PATCH", f"/projects/{pid}/shares/{owner.id}", {"json": {"role": "owner"}}, 422),
        ("PATCH", f"/projects/{pid}/shares/{owner.id}", {"json": {}}, 422),
        ("DELETE", f"/projects/{pid}/invitations/not-a-uuid", {}, 422),
        ("POST", "/invitations/not-a-uuid/accept", {}, 422),
    ]
    for method, path, kwargs, status in cases:
        headers = {**owner.headers, **kwargs.pop("headers", {})}
        assert_problem(client.request(method, API + path, headers=headers, **kwargs), status)
    assert snapshot(services) == before
