"""Helpers for catalog API tests: images drawn with Pillow, objects made through the API,
and a snapshot of the catalog (rows and stored files) to prove bad input changed nothing."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from sqlalchemy import text

from tests.api_factories import Caller

API = "/api/v1"
CATALOG_TABLES = ("collections", "projects", "project_shares", "project_invitations", "products", "assets")
PROBLEM_JSON = "application/problem+json"


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (128, 128), color: str = "navy") -> bytes:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4), fill=color)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def png_upload(name: str = "shirt.png", **kwargs: Any) -> dict[str, Any]:
    return {"file": (name, image_bytes(**kwargs), "image/png")}


def create_collection(client: Any, caller: Caller, name: str = "Spring") -> dict[str, Any]:
    response = client.post(f"{API}/collections", json={"name": name}, headers=caller.headers)
    assert response.status_code == 201, response.text
    return response.json()


def create_project(
    client: Any, caller: Caller, collection_id: str | None = None, name: str = "Shirts"
) -> dict[str, Any]:
    collection_id = collection_id or create_collection(client, caller)["id"]
    body = {"collection_id": collection_id, "name": name}
    response = client.post(f"{API}/projects", json=body, headers=caller.headers)
    assert response.status_code == 201, response.text
    return response.json()


def upload_product(
    client: Any, caller: Caller, project_id: str, category: str = "top", side: str = "front", **image: Any
) -> dict[str, Any]:
    response = client.post(
        f"{API}/projects/{project_id}/products",
        data={"category": category, "side": side},
        files=png_upload(**image),
        headers=caller.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def upload_asset(client: Any, caller: Caller, type_: str = "model", **image: Any) -> dict[str, Any]:
    response = client.post(
        f"{API}/assets", data={"type": type_}, files=png_upload(**image), headers=caller.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def verify_email(services: Any, caller: Caller) -> None:
    """Marks the caller's address verified (as following the mailed link does)."""
    with services.sessions() as session:
        session.execute(text("UPDATE users SET email_verified_at = now() WHERE id = :u"), {"u": caller.id})
        session.commit()


def invite(client: Any, owner: Caller, project_id: str, email: str, role: str | None = None) -> Any:
    """The owner's ``POST /projects/{id}/shares`` (an invitation to ``email``); the response."""
    body = {"email": email} if role is None else {"email": email, "role": role}
    return client.post(f"{API}/projects/{project_id}/shares", json=body, headers=owner.headers)


def accept_invitation(client: Any, invitee: Caller, project_id: str) -> dict[str, Any]:
    """The invitee accepts their open invitation to the project; the project."""
    mine = client.get(f"{API}/invitations", headers=invitee.headers)
    assert mine.status_code == 200, mine.text
    (invitation,) = [i for i in mine.json()["items"] if i["project"]["id"] == project_id]
    accepted = client.post(f"{API}/invitations/{invitation['id']}/accept", headers=invitee.headers)
    assert accepted.status_code == 200, accepted.text
    return dict(accepted.json())


def share(client: Any, owner: Caller, project_id: str, reader: Caller, role: str | None = None) -> None:
    """Share the project with ``reader`` as the default role (viewer), or as ``role``: the owner
    invites the reader's address, and the reader (address verified) accepts."""
    response = invite(client, owner, project_id, reader.user.email, role)
    assert response.status_code == 202, response.text
    verify_email(services_of(client), reader)
    accept_invitation(client, reader, project_id)


def services_of(client: Any) -> Any:
    return client.app.state.services


def stored_files(services: Any) -> list[str]:
    root = Path(services.storage.root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def snapshot(services: Any) -> dict[str, Any]:
    """Every catalog row (as text) and every stored file name."""
    state: dict[str, Any] = {"files": stored_files(services)}
    with services.sessions() as session:
        for table in CATALOG_TABLES:
            rows = session.execute(text(f"SELECT t::text FROM {table} t ORDER BY 1")).scalars()
            state[table] = list(rows)
    return state


def assert_problem(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == PROBLEM_JSON, response.headers["content-type"]
    body = response.json()
    assert body["status"] == status and body["code"]
    if code is not None:
        assert body["code"] == code, body
    return body
