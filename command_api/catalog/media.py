"""Storage of checked images, and their facts in rows and responses."""

from __future__ import annotations

from typing import Any

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


def image_out(row: StoredImage, storage: Storage, ttl_s: int) -> dict[str, Any]:
    """The image fields of a response: its facts and an expiring signed URL."""
    return {
        "media_type": row.media_type,
        "width": row.width,
        "height": row.height,
        "size_bytes": row.size_bytes,
        "url": storage.signed_url(row.storage_key, expires_in=ttl_s),
    }
