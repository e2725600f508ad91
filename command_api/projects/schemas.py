"""Request and response bodies of /projects and /projects/{id}/shares."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr
from pydantic.config import JsonDict

from command_api.catalog.fields import MarketingCopy, Name, PatchBody
from command_api.products.schemas import EXAMPLE as PRODUCT_EXAMPLE
from command_api.products.schemas import ProductOut

EXAMPLE: JsonDict = {
    "id": "9a3e5f10-4c2d-4e8b-a1f7-3b6c9d0e2f44",
    "collection_id": "0b6f3c52-8d5c-4f7e-9a54-2f1f0c8e7d11",
    "owner_id": "2c8f4e1a-7b3d-4a6e-9c0f-1d2e3f4a5b6c",
    "name": "Linen shirt lookbook",
    "marketing_copy": "Breathable linen for warm days.",
    "shared_user_ids": ["7e1d2c3b-4a5f-4e6d-8c9b-0a1f2e3d4c5b"],
    "image_count": 12,
    "video_count": 1,
    "products": [PRODUCT_EXAMPLE],
    "created_at": "2026-11-27T09:01:00Z",
    "updated_at": "2026-11-27T09:01:00Z",
}


class ProjectIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "collection_id": "0b6f3c52-8d5c-4f7e-9a54-2f1f0c8e7d11",
                "name": "Linen shirt lookbook",
                "marketing_copy": "Breathable linen for warm days.",
            }
        },
    )
    collection_id: uuid.UUID
    name: Name
    marketing_copy: MarketingCopy | None = None


class ProjectPatch(PatchBody):
    """Only the fields given change; ``marketing_copy: null`` clears it."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"marketing_copy": "Now in three colours."}}
    )
    name: Name | None = None
    marketing_copy: MarketingCopy | None = None


class ProjectOut(BaseModel):
    """A project. ``image_count`` and ``video_count`` count its generated results (the
    ``project_stats`` read model); ``products`` are all its product images, in upload order."""

    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE})
    id: uuid.UUID
    collection_id: uuid.UUID
    owner_id: uuid.UUID
    name: str
    marketing_copy: str | None
    shared_user_ids: list[uuid.UUID]
    image_count: int
    video_count: int
    products: list[ProductOut]
    created_at: datetime
    updated_at: datetime


class ShareIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"email": "colleague@example.com"}}
    )
    email: EmailStr
