"""Storage of checked images."""

from __future__ import annotations

from command_api.catalog.images import CheckedImage
from infra.storage import Storage


def store(storage: Storage, prefix: str, object_id: object, image: CheckedImage) -> str:
    """Puts the image under ``<prefix>/<id>.<ext>`` and returns that key."""
    key = f"{prefix}/{object_id}.{image.extension}"
    storage.put(key, image.data, image.media_type)
    return key
