"""Request and response bodies of /projects and /projects/{id}/shares."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field
from pydantic.config import JsonDict

from command_api.catalog.fields import MarketingCopy, Name, PatchBody
from command_api.catalog.models import ShareRole
from command_api.inputs import InputModel
from command_api.products.schemas import EXAMPLE as PRODUCT_EXAMPLE
from command_api.products.schemas import ProductOut

EXAMPLE: JsonDict = {
    "id": "9a3e5f10-4c2d-4e8b-a1f7-3b6c9d0e2f44",
    "collection_id": "0b6f3c52-8d5c-4f7e-9a54-2f1f0c8e7d11",
    "owner_id": "2c8f4e1a-7b3d-4a6e-9c0f-1d2e3f4a5b6c",
    "name": "Linen shirt lookbook",
    "marketing_copy": "Breathable linen for warm days.",
    "shared_user_ids": ["7e1d2c3b-4a5f-4e6d-8c9b-0a1f2e3d4c5b"],
    "shares": [{"user_id": "7e1d2c3b-4a5f-4e6d-8c9b-0a1f2e3d4c5b", "role": "viewer"}],
    "image_count": 12,
    "video_count": 1,
    "products": [PRODUCT_EXAMPLE],
    "created_at": "2026-11-27T09:01:00Z",
    "updated_at": "2026-11-27T09:01:00Z",
}


class ProjectIn(InputModel):
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


class ShareOut(BaseModel):
    user_id: uuid.UUID
    role: ShareRole = Field(description="viewer: reads; editor: also adds products and orders jobs")


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
    shares: list[ShareOut] = Field(description="the users it is shared with and their roles")
    image_count: int
    video_count: int
    products: list[ProductOut]
    created_at: datetime
    updated_at: datetime


class ShareIn(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"email": "colleague@example.com", "role": "editor"}},
    )
    email: EmailStr
    role: ShareRole = Field(
        default=ShareRole.VIEWER,
        description="viewer (default): reads the project, its products and results; editor: also "
        "adds products and orders jobs in it (charged to the editor). Sharing again changes the role.",
    )
