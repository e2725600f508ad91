"""Request and response bodies of /api-keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from command_api.inputs import InputModel, NoControls

NAME_MAX = 100


def _one_line(name: str) -> str:
    """Printable on one line: no tab or line break either (what ``NoControls`` lets through)."""
    if not name.isprintable():
        raise ValueError("the name must be printable characters on one line")
    return name


# Printable: no control characters (``NoControls``), no tabs or line breaks (checked after the
# constraints, so surrounding whitespace is stripped first).
KeyName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX),
    NoControls,
    AfterValidator(_one_line),
]


class ApiKeyIn(InputModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"name": "shop server"}})

    name: KeyName = Field(description=f"A label for the key (1..{NAME_MAX} printable characters)")


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="The key's first characters (`vto_sk_` and 5 more), to tell keys apart")
    created_at: datetime
    last_used_at: datetime | None = Field(
        description="When the key was last used (written at most every `VTO_API_KEY_LAST_USED_INTERVAL_S`)"
    )


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself (`vto_sk_...`): shown this once, never again")
