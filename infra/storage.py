"""Object storage: local files in the data dir (default) or S3-compatible storage.

Objects are addressed by keys like ``products/<uuid>.png``. Clients never see keys as
URLs: they get expiring signed URLs (HMAC-signed links served by the API for local files,
presigned URLs for S3)."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import urlencode

from infra.settings import Settings, jwt_secret


class ObjectNotFound(KeyError):
    pass


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Removes the object; nothing happens when there is none (idempotent)."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Removes every object whose key starts with ``prefix/``; returns how many."""
        ...

    def signed_url(self, key: str, expires_in: int) -> str: ...


def check_key(key: str) -> str:
    """Keys are relative POSIX paths of safe parts; nothing may escape the store."""
    path = PurePosixPath(key)
    if not key or path.is_absolute() or any(p in ("", ".", "..") for p in path.parts):
        raise ValueError(f"invalid storage key {key!r}")
    return str(path)


class LocalStorage:
    """Files under ``root``; signed URLs point at the API's ``/api/v1/files/{key}`` route."""

    def __init__(self, root: Path, secret: bytes, base_url: str = "/api/v1/files") -> None:
        self.root = root
        self.secret = secret
        self.base_url = base_url.rstrip("/")

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        path.with_suffix(path.suffix + ".type").write_text(content_type)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def content_type(self, key: str) -> str:
        meta = self._path(key).with_suffix(self._path(key).suffix + ".type")
        return meta.read_text() if meta.exists() else "application/octet-stream"

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        path.with_suffix(path.suffix + ".type").unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        folder = self._path(prefix)
        if not folder.is_dir():
            return 0
        removed = sum(1 for p in folder.rglob("*") if p.is_file() and p.suffix not in (".type", ".tmp"))
        shutil.rmtree(folder)
        return removed

    def signature(self, key: str, expires: int) -> str:
        return hmac.new(self.secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def signed_url(self, key: str, expires_in: int) -> str:
        expires = int(time.time()) + expires_in
        query = urlencode({"expires": expires, "signature": self.signature(check_key(key), expires)})
        return f"{self.base_url}/{key}?{query}"

    def verify(self, key: str, expires: int, signature: str) -> bool:
        if expires < time.time():
            return False
        return hmac.compare_digest(self.signature(key, expires), signature)


class S3Storage:
    """S3-compatible object storage (AWS S3, MinIO, R2, ...) through boto3."""

    def __init__(self, bucket: str, endpoint_url: str | None = None, region: str | None = None) -> None:
        import boto3  # imported here: only the S3 configuration needs it
        from botocore.config import Config

        self.bucket = bucket
        # Signature Version 4 everywhere: botocore would presign with the deprecated SigV2 in
        # us-east-1 (or with no region), which S3 buckets created since 2020, R2 and recent
        # MinIO refuse. A SigV4 presigned URL lives at most 7 days (``signed_url_ttl_s``).
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=Config(signature_version="s3v4")
        )

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=check_key(key), Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=check_key(key))
        except self.client.exceptions.NoSuchKey:
            raise ObjectNotFound(key) from None
        body: bytes = response["Body"].read()
        return body

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=check_key(key))  # no error when absent

    def delete_prefix(self, prefix: str) -> int:
        removed = 0
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=check_key(prefix) + "/"
        )
        for page in pages:
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:  # a page holds at most 1,000 keys, as many as one delete_objects takes
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                removed += len(keys)
        return removed

    def exists(self, key: str) -> bool:
        """False when S3 answers 404; any other error (access denied, throttling) is raised,
        never read as a missing object."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=check_key(key))
        except self.client.exceptions.ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise
        return True

    def signed_url(self, key: str, expires_in: int) -> str:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": check_key(key)}, ExpiresIn=expires_in
        )
        return url


def storage_from_settings(settings: Settings) -> Storage:
    """The object store of every process: S3 when configured, else ``data_dir/files`` with
    links signed by the process's secret and served under ``public_base_url``."""
    if settings.s3_bucket:
        return S3Storage(settings.s3_bucket, settings.s3_endpoint_url, settings.s3_region)
    base = f"{settings.public_base_url.rstrip('/')}/api/v1/files"
    return LocalStorage(Path(settings.data_dir) / "files", jwt_secret(settings).encode(), base_url=base)
