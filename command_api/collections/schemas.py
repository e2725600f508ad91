"""Request and response bodies of /collections."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from pydantic.config import JsonDict

from command_api.catalog.fields import Description, Name, PatchBody
from command_api.inputs import InputModel

EXAMPLE: JsonDict = {
    "id": "0b6f3c52-8d5c-4f7e-9a54-2f1f0c8e7d11",
    "name": "Spring 2027",
    "description": "Lookbook for the spring drop",
    "created_at": "2026-11-27T09:00:00Z",
    "updated_at": "2026-11-27T09:00:00Z",
}


class CollectionIn(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"name": "Spring 2027", "description": "Lookbook for the spring drop"}},
    )
    name: Name
    description: Description | None = None


class CollectionPatch(PatchBody):
    """Only the fields given change; ``description: null`` clears it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"name": "Spring 2027 (final)"}})
    name: Name | None = None
    description: Description | None = None


class CollectionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"example": EXAMPLE})
    id: uuid.UUID
    name: str
    description: str | None
    created_at: datetime
    updated_at: datetime
