"""``S3Storage`` against moto's S3 server (a stand-in for S3, which we do not own), over HTTP:
objects put and read back with their content type, presigned URLs fetched from the server,
missing objects, keys refused before any request, and errors that are not "missing"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

import httpx
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto.server import ThreadedMotoServer

from infra.settings import Settings
from infra.storage import ObjectNotFound, S3Storage, storage_from_settings

REGION = "us-east-1"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free port of this machine, for this module."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials of no real account, and no configuration of this machine's."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


@pytest.fixture
def s3(s3_endpoint: str) -> S3Storage:
    """An ``S3Storage`` on a new bucket of its own."""
    storage = S3Storage(f"vto-{uuid4().hex[:16]}", endpoint_url=s3_endpoint, region=REGION)
    storage.client.create_bucket(Bucket=storage.bucket)
    return storage


def keys_in(storage: S3Storage) -> list[str]:
    listed = storage.client.list_objects_v2(Bucket=storage.bucket)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_an_object_put_is_read_back_with_its_content_type(s3: S3Storage) -> None:
    key = f"outputs/{uuid4()}.png"
    assert not s3.exists(key)
    s3.put(key, PNG, "image/png")
    assert s3.get(key) == PNG
    assert s3.exists(key)
    assert s3.client.head_object(Bucket=s3.bucket, Key=key)["ContentType"] == "image/png"
    s3.put(key, b"replaced", "text/plain")  # a put replaces the object
    assert s3.get(key) == b"replaced"
    assert keys_in(s3) == [key]


def test_a_signed_url_is_fetched_over_http(s3: S3Storage, s3_endpoint: str) -> None:
    key = f"products/{uuid4()}.png"
    s3.put(key, PNG, "image/png")
    url = s3.signed_url(key, 600)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == s3_endpoint
    assert parts.path == f"/{s3.bucket}/{key}"
    query = parse_qs(parts.query)
    assert query["X-Amz-Expires"] == ["600"] and query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert len(query["X-Amz-Signature"][0]) == 64
    response = httpx.get(url)  # no credentials: the URL alone
    assert response.status_code == 200
    assert response.content == PNG and response.headers["content-type"] == "image/png"


def test_a_missing_object_is_object_not_found(s3: S3Storage) -> None:
    key = f"outputs/{uuid4()}.png"
    with pytest.raises(ObjectNotFound) as raised:
        s3.get(key)
    assert isinstance(raised.value, KeyError) and raised.value.args == (key,)
    assert s3.exists(key) is False
    assert httpx.get(s3.signed_url(key, 60)).status_code == 404


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x.png", "a/../b.png", ".."])
def test_keys_that_could_escape_are_refused_before_any_request(s3: S3Storage, key: str) -> None:
    with Stubber(s3.client):  # no response queued: any request would fail the test
        for call in (
            lambda: s3.put(key, PNG, "image/png"),
            lambda: s3.get(key),
            lambda: s3.exists(key),
            lambda: s3.signed_url(key, 60),
        ):
            with pytest.raises(ValueError, match="invalid storage key"):
                call()
    assert keys_in(s3) == []


def test_a_missing_bucket_is_an_error_not_a_missing_object(s3_endpoint: str) -> None:
    storage = S3Storage(f"vto-none-{uuid4().hex[:12]}", endpoint_url=s3_endpoint, region=REGION)
    with pytest.raises(ClientError) as put:
        storage.put("a.png", PNG, "image/png")
    assert put.value.response["Error"]["Code"] == "NoSuchBucket"
    with pytest.raises(ClientError) as get:
        storage.get("a.png")
    assert get.value.response["Error"]["Code"] == "NoSuchBucket"


def test_an_error_other_than_not_found_is_raised_by_exists(s3: S3Storage) -> None:
    """S3 refusing access (403) says nothing about whether the object exists."""
    with Stubber(s3.client) as stub:
        stub.add_client_error("head_object", "403", "Forbidden", http_status_code=403)
        with pytest.raises(ClientError) as raised:
            s3.exists("outputs/a.png")
        stub.assert_no_pending_responses()
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_the_settings_choose_s3(s3_endpoint: str, s3: S3Storage, tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        s3_bucket=s3.bucket,
        s3_endpoint_url=s3_endpoint,
        s3_region=REGION,
    )
    storage = storage_from_settings(settings)
    assert isinstance(storage, S3Storage)
    storage.put("assets/model.png", PNG, "image/png")
    assert s3.get("assets/model.png") == PNG
    assert httpx.get(storage.signed_url("assets/model.png", 60)).content == PNG
    assert not (tmp_path / "data").exists()  # nothing written locally


def test_a_link_lifetime_beyond_what_sigv4_allows_is_refused() -> None:
    week = 7 * 24 * 3600
    assert Settings(_env_file=None, signed_url_ttl_s=week).signed_url_ttl_s == week  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="signed_url_ttl_s"):
        Settings(_env_file=None, signed_url_ttl_s=week + 1)  # type: ignore[call-arg]
