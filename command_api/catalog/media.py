"""Storage of checked images; signed links to stored objects; the image fields of responses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from pydantic import BaseModel

from command_api.catalog.images import CheckedImage
from command_api.catalog.models import StoredImage
from infra.storage import Storage


def store(storage: Storage, prefix: str, object_id: object, image: CheckedImage) -> dict[str, Any]:
    """Puts the image under ``<prefix>/<id>.<ext>``; returns the ``StoredImage`` columns of
    its row."""
    key = f"{prefix}/{object_id}.{image.extension}"
    storage.put(key, image.data, image.media_type)
    return {
        "storage_key": key,
        "media_type": image.media_type,
        "width": image.width,
        "height": image.height,
        "size_bytes": image.size,
    }


@dataclass(frozen=True)
class UrlSigner:
    """Expiring signed links to stored objects (``VTO_SIGNED_URL_TTL_S``), absolute: a
    storage's relative link (local files: ``/api/v1/files/...``) is put under ``base`` (the
    public base URL, or the request's)."""

    storage: Storage
    ttl_s: int
    base: str = ""

    def __call__(self, key: str | None) -> str:
        """The link of ``key``; ``""`` for an object with no key (nothing stored)."""
        if not key:
            return ""
        url = self.storage.signed_url(key, expires_in=self.ttl_s)
        return f"{self.base}{url}" if url.startswith("/") else url


class StoredImageOut(BaseModel):
    """The image fields of a response: what the upload check found, and a signed link."""

    media_type: str
    width: int
    height: int
    size_bytes: int
    url: str

    @classmethod
    def image(cls, row: StoredImage, sign: UrlSigner, **fields: Any) -> Self:
        return cls(
            media_type=row.media_type,
            width=row.width,
            height=row.height,
            size_bytes=row.size_bytes,
            url=sign(row.storage_key),
            **fields,
        )
