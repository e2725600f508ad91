"""Bodies of /users/me (and the user body /auth/register answers with)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from command_api.auth.passwords import MAX_LENGTH
from command_api.inputs import InputModel

Language = Literal["ko", "en", "ja", "zh"]
NAME_MAX = 200


def clean_name(value: str | None) -> str | None:
    """Trimmed; an empty or blank name is refused (send ``null`` to clear it)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise ValueError("name must not be blank")
    return value


class UserOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "0b6f0c2e-5d1a-4a4e-9a53-2f1d7e3c9b10",
                    "email": "seller@example.com",
                    "email_verified": True,
                    "name": "Kim Seller",
                    "language": "ko",
                    "roles": ["user"],
                    "created_at": "2026-11-26T12:00:00Z",
                }
            ]
        },
    )
    id: uuid.UUID
    email: str
    email_verified: bool = Field(
        description="the owner proved the address (mailed link, password reset, or a provider sign-in)"
    )
    name: str | None
    language: str
    roles: list[str] = Field(
        description='the stored roles (["admin"] for an administrator, granted with `vto admin add`), '
        'else ["user"]'
    )
    created_at: datetime


class UserPatch(InputModel):
    """Only the fields present change. ``name: null`` clears the name."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Kim Seller", "language": "ko"}, {"language": "ja"}]},
    )
    name: str | None = Field(default=None, max_length=NAME_MAX)
    language: Language | None = Field(default=None, description="one of ko, en, ja, zh")

    @field_validator("name")
    @classmethod
    def _clean_name(cls, value: str | None) -> str | None:
        return clean_name(value)

    @field_validator("language")
    @classmethod
    def _language_not_null(cls, value: str | None) -> str | None:
        if value is None:
            raise ValueError("language cannot be null")
        return value


class AccountDeletionIn(InputModel):
    """``DELETE /users/me``: the password of an account that has one; nothing (or no body) for
    an account without one, right after signing in with its provider."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"password": "correct horse battery"}]}
    )
    password: str | None = Field(default=None, min_length=1, max_length=MAX_LENGTH)


class SessionOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "example": {
                "id": "5b0f3c0a-8a43-4c55-9d1c-0c7c0b3f9a21",
                "method": "password",
                "created_at": "2026-12-06T09:00:00Z",
                "last_used_at": "2026-12-06T10:45:00Z",
                "expires_at": "2027-01-05T10:45:00Z",
                "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X)",
                "client_address": "203.0.113.7",
                "current": True,
            }
        },
    )
    id: uuid.UUID = Field(description="the session (the refresh-token family of one sign-in)")
    method: str | None = Field(description="password, google or kakao; null for a sign-in before sessions")
    created_at: datetime = Field(description="when the user signed in")
    last_used_at: datetime = Field(description="the last refresh (or the sign-in)")
    expires_at: datetime = Field(description="when it ends unless refreshed")
    user_agent: str | None
    client_address: str | None = Field(description="the address the sign-in came from")
    current: bool = Field(default=False, description="the session of the access token that asked")
