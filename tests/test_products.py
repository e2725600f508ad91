"""/projects/{id}/products: multipart uploads checked by decoding; listing; bad uploads change
nothing (no row, no stored file)."""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from PIL import Image

from command_api.catalog import images
from tests.api_factories import make_user
from tests.catalog_factories import (
    API,
    assert_problem,
    create_project,
    image_bytes,
    snapshot,
    stored_files,
    upload_product,
)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but holds almost no data (a bomb's
    shape: the check must refuse it before decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def noise_png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(out, format="PNG")
    return out.getvalue()


def multipart(fields: dict[str, str], file: bytes, boundary: str = "vto-boundary") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + file
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def test_upload_and_list_products(client: Any, services: Any) -> None:
    owner = make_user(services)
    project = create_project(client, owner)
    url = f"{API}/projects/{project['id']}/products"
    uploads = [
        ("top", "front", "PNG", "image/png", (128, 128)),
        ("top", "back", "JPEG", "image/jpeg", (96, 160)),
        ("dress", "front", "WEBP", "image/webp", (200, 64)),
        ("outer", "back", "PNG", "image/png", (64, 64)),
    ]
    created = []
    for category, side, fmt, media_type, size in uploads:
        data = image_bytes(fmt, size)
        response = client.post(
            url,
            data={"category": category, "side": side, "name": f"{category} {side}"},
            files={"file": ("upload.bin", data, "application/octet-stream")},  # the declared type is ignored
            headers=owner.headers,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert {k: body[k] for k in ("project_id", "category", "side", "media_type", "width", "height")} == {
            "project_id": project["id"],
            "category": category,
            "side": side,
            "media_type": media_type,
            "width": size[0],
            "height": size[1],
        }
        assert body["name"] == f"{category} {side}"
        fetched = client.get(body["url"])  # the signed link works without a token
        assert fetched.status_code == 200 and body["size_bytes"] == len(fetched.content)
        stored = Image.open(io.BytesIO(fetched.content))  # re-encoded (tests/test_assets.py: metadata)
        assert (stored.format, stored.size) == (fmt, size)
        assert fetched.headers["content-type"] == media_type
        created.append(body["id"])
    assert sorted(stored_files(services)) == sorted(
        f"products/{pid}.{ext}{suffix}"
        for pid, ext in zip(created, ["png", "jpg", "webp", "png"], strict=True)
        for suffix in ("", ".type")
    )

    listed = client.get(url, headers=owner.headers).json()
    assert [p["id"] for p in listed["items"]] == created and listed["next_cursor"] is None
    first = client.get(url, params={"limit": 3}, headers=owner.headers).json()
    second = client.get(
        url, params={"limit": 3, "cursor": first["next_cursor"]}, headers=owner.headers
    ).json()
    assert [p["id"] for p in first["items"] + second["items"]] == created
    in_project = client.get(f"{API}/projects/{project['id']}", headers=owner.headers).json()["products"]
    assert [p["id"] for p in in_project] == created

    # A chunked upload (no Content-Length) is read within the limit and parsed as usual.
    boundary = "vto-boundary"
    body = multipart({"category": "bottom", "side": "front"}, image_bytes(), boundary)
    chunked = client.post(
        url,
        content=iter([body[:100], body[100:]]),
        headers={**owner.headers, "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert chunked.status_code == 201, chunked.text
    assert chunked.json()["category"] == "bottom"


def test_bad_uploads_change_nothing(client: Any, services: Any) -> None:
    owner = make_user(services)
    project = create_project(client, owner)
    upload_product(client, owner, project["id"])
    url = f"{API}/projects/{project['id']}/products"
    services.settings.max_upload_bytes = 30_000
    ok = {"category": "top", "side": "front"}
    png = image_bytes()
    gif = image_bytes("GIF")
    bmp = image_bytes("BMP", (64, 64))
    before = snapshot(services)

    def post(data: dict[str, Any], file: bytes | None, **kwargs: Any) -> Any:
        files = {"file": ("a.png", file, "image/png")} if file is not None else None
        return client.post(url, data=data, files=files, headers=owner.headers, **kwargs)

    cases: list[tuple[Any, int, str | None]] = [
        (post(ok, b"hello, not an image"), 415, "unsupported_media_type"),
        (post(ok, gif), 415, "unsupported_media_type"),
        (post(ok, bmp), 415, "unsupported_media_type"),
        (post(ok, b""), 415, "unsupported_media_type"),
        (post(ok, png[: len(png) // 2]), 422, "invalid_image"),
        (post(ok, png[:8] + b"\0" * 200), 422, "invalid_image"),
        (post(ok, image_bytes(size=(32, 128))), 422, "invalid_image"),
        (post(ok, png_claiming(9000, 100)), 422, "invalid_image"),
        (post(ok, png_claiming(8000, 8000)), 422, "invalid_image"),  # 64 Mpx: a decompression bomb
        (post(ok, png_claiming(2**31 - 1, 2**31 - 1)), 422, "invalid_image"),
        (post(ok, noise_png((120, 120))), 413, "payload_too_large"),  # ~43 kB > 30 kB
        (post(ok, os.urandom(200_000)), 413, "payload_too_large"),  # refused before parsing
        (post({"category": "shoes", "side": "front"}, png), 422, "validation_error"),
        (post({"category": "top", "side": "left"}, png), 422, "validation_error"),
        (post({"category": "top"}, png), 422, "validation_error"),
        (post({"side": "front"}, png), 422, "validation_error"),
        (post(ok, None), 422, "validation_error"),
        (post({**ok, "file": "not a file"}, None), 422, "validation_error"),
        (post({**ok, "name": "n" * 201}, png), 422, "validation_error"),
        (client.post(url, json={**ok, "file": "aGVsbG8="}, headers=owner.headers), 422, "validation_error"),
        (
            client.post(
                url,
                content=b"--x\r\ngarbage",
                headers={**owner.headers, "content-type": "multipart/form-data; boundary=x"},
            ),
            422,
            "validation_error",
        ),
        (
            client.post(
                url,
                content=iter([b"x" * 50_000, b"x" * 50_000]),
                headers={**owner.headers, "content-type": "multipart/form-data; boundary=x"},
            ),
            413,
            "payload_too_large",
        ),
        (
            client.post(
                f"{API}/projects/not-a-uuid/products",
                data=ok,
                files={"file": ("a", png)},
                headers=owner.headers,
            ),
            422,
            None,
        ),
        (client.get(url, params={"cursor": "nope"}, headers=owner.headers), 400, "invalid_cursor"),
        (client.get(url, params={"limit": "many"}, headers=owner.headers), 422, None),
    ]
    for response, status, code in cases:
        assert_problem(response, status, code)
    assert snapshot(services) == before


def test_an_upload_decodes_holding_no_connection_and_no_lock_on_the_project(
    client: Any, services: Any, pg_url: str, monkeypatch: Any
) -> None:
    """While a product image decodes and re-encodes, its request holds no catalog connection
    and no lock: another transaction may lock the project row at once, and the upload then
    completes (attack 3: each upload held a connection and, for products, the project's lock)."""
    owner = make_user(services)
    project = create_project(client, owner)
    entered, release = threading.Event(), threading.Event()
    real = images.without_metadata

    def observed(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(30), "the test did not release the decode"
        return real(*args, **kwargs)

    monkeypatch.setattr(images, "without_metadata", observed)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(upload_product, client, owner, project["id"])
        try:
            assert entered.wait(30), "the upload never reached its re-encode"
            assert services.engine.pool.checkedout() == 0
            with psycopg.connect(pg_url) as conn:  # NOWAIT: fails at once if the upload holds it
                conn.execute("SET lock_timeout = '1s'")
                conn.execute("SELECT id FROM projects WHERE id = %s FOR UPDATE NOWAIT", (project["id"],))
        finally:
            release.set()
        product = pending.result(timeout=60)
    assert product["project_id"] == project["id"]
    listed = client.get(f"{API}/projects/{project['id']}/products", headers=owner.headers).json()["items"]
    assert [p["id"] for p in listed] == [product["id"]]
