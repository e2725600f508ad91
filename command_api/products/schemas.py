"""Response bodies of /projects/{id}/products (the upload itself is multipart)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import ConfigDict
from pydantic.config import JsonDict

from command_api.catalog.media import StoredImageOut, UrlSigner
from command_api.catalog.models import Product
from generator_worker.generation import GarmentCategory, GarmentSide

EXAMPLE: JsonDict = {
    "id": "5d0e7a4c-2b1f-4b8e-8f3c-6a9d2e1c4b77",
    "project_id": "9a3e5f10-4c2d-4e8b-a1f7-3b6c9d0e2f44",
    "category": "top",
    "side": "front",
    "name": "Linen shirt",
    "media_type": "image/png",
    "width": 1024,
    "height": 1365,
    "size_bytes": 481_233,
    "url": "/api/v1/files/products/5d0e7a4c-2b1f-4b8e-8f3c-6a9d2e1c4b77.png"
    "?expires=1796000000&signature=3f9a…",
    "created_at": "2026-11-27T09:05:00Z",
}


class ProductOut(StoredImageOut):
    """A product image; ``url`` is a signed link that expires (``VTO_SIGNED_URL_TTL_S``)."""

    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE})
    id: uuid.UUID
    project_id: uuid.UUID
    category: GarmentCategory
    side: GarmentSide
    name: str | None
    created_at: datetime

    @classmethod
    def of(cls, product: Product, sign: UrlSigner) -> ProductOut:
        return cls.image(
            product,
            sign,
            id=product.id,
            project_id=product.project_id,
            category=GarmentCategory(product.category),
            side=GarmentSide(product.side),
            name=product.name,
            created_at=product.created_at,
        )
