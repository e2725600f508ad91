"""Response bodies of /assets (the upload itself is multipart)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict
from pydantic.config import JsonDict

from command_api.catalog.media import StoredImageOut, UrlSigner
from command_api.catalog.models import Asset


class AssetType(StrEnum):
    model = "model"
    background = "background"


EXAMPLE: JsonDict = {
    "id": "c4d5e6f7-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
    "type": "model",
    "name": "Studio model A",
    "media_type": "image/jpeg",
    "width": 768,
    "height": 1024,
    "size_bytes": 212_004,
    "url": "/api/v1/files/assets/c4d5e6f7-1a2b-4c3d-8e9f-0a1b2c3d4e5f.jpg?expires=1796000000&signature=9b1c…",
    "created_at": "2026-11-27T09:10:00Z",
}


class AssetOut(StoredImageOut):
    """A person photo (``model``) or a ``background`` for jobs; private to its owner."""

    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE})
    id: uuid.UUID
    type: AssetType
    name: str | None
    created_at: datetime

    @classmethod
    def of(cls, asset: Asset, sign: UrlSigner) -> AssetOut:
        return cls.image(
            asset,
            sign,
            id=asset.id,
            type=AssetType(asset.type),
            name=asset.name,
            created_at=asset.created_at,
        )
