"""Bodies of /auth: register, login, refresh, OAuth."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from command_api.auth.passwords import MAX_LENGTH, MIN_LENGTH
from command_api.inputs import InputModel
from command_api.users.emails import EMAIL_MAX, EmailAddress, canonical_email
from command_api.users.schemas import NAME_MAX, Language, clean_name

TOKEN_MAX = 4096
URL_MAX = 2048


def problem_responses(by_status: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for problem answers: status -> description (the codes)."""
    return {
        status: {"description": text, "content": {"application/problem+json": {}}}
        for status, text in by_status.items()
    }


class RegisterIn(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "email": "seller@example.com",
                    "password": "correct horse battery staple",
                    "name": "Kim Seller",
                    "language": "ko",
                }
            ]
        },
    )
    email: EmailAddress = Field(
        description="stored in one form (NFKC, lower-cased, IDNA domain): look-alikes are one address"
    )
    password: str = Field(min_length=MIN_LENGTH, max_length=MAX_LENGTH)
    name: str | None = Field(default=None, max_length=NAME_MAX)
    language: Language = Field(default="en", description="one of ko, en, ja, zh")

    @field_validator("name")
    @classmethod
    def _clean_name(cls, value: str | None) -> str | None:
        return clean_name(value)


class LoginIn(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"email": "seller@example.com", "password": "correct horse battery staple"}]
        },
    )
    # Not validated as an email address: a malformed one simply does not match (401).
    email: str = Field(min_length=1, max_length=EMAIL_MAX)
    password: str = Field(min_length=1, max_length=MAX_LENGTH)

    @field_validator("email")
    @classmethod
    def _normalize_email(cls, value: str) -> str:
        return canonical_email(value)


class RefreshIn(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"refresh_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..."}]},
    )
    refresh_token: str = Field(min_length=1, max_length=TOKEN_MAX)


class TokenPair(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
                    "refresh_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
                    "token_type": "bearer",
                    "expires_in": 900,
                }
            ]
        }
    )
    access_token: str
    refresh_token: str = Field(description="single use: /auth/refresh answers with the next one")
    token_type: str = "bearer"  # noqa: S105
    expires_in: int = Field(description="seconds the access token is valid")


class OAuthCodeIn(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "code": "4/0AfJohXn...",
                    "redirect_uri": "https://app.example.com/oauth/callback",
                    "code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
                    "state": "eyJwIjoiZ29vZ2xlIi...",
                }
            ]
        },
    )
    code: str = Field(min_length=1, max_length=TOKEN_MAX, description="the provider's authorization code")
    redirect_uri: str = Field(
        min_length=1, max_length=URL_MAX, description="the redirect_uri the code was issued for"
    )
    code_verifier: str = Field(
        min_length=43, max_length=128, description="PKCE verifier (RFC 7636) from the authorize call"
    )
    state: str = Field(
        min_length=1,
        max_length=TOKEN_MAX,
        description="the state from GET /auth/oauth/{provider}/authorize, verified (signature, "
        "age, provider, redirect_uri, PKCE challenge)",
    )


class AuthorizeOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "authorization_url": "https://accounts.google.com/o/oauth2/v2/auth?response_type=code&...",
                    "state": "eyJwIjoiZ29vZ2xlIi...",
                    "code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
                    "expires_in": 600,
                }
            ]
        }
    )
    authorization_url: str = Field(description="send the browser here")
    state: str = Field(description="signed, expires; compare with the callback's state, then send it back")
    code_verifier: str = Field(description="PKCE verifier: keep it client-side, send it with the code")
    expires_in: int = Field(description="seconds the state is accepted")


# --- mailed links: verification, password reset; signed-in credential changes ----------------
class MailTokenIn(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"token": "q3v8YV0m9Jm0yXWkq1bqgB0p6f7C2rYd0cQ0s9n4Z1E"}]},
    )
    token: str = Field(min_length=1, max_length=TOKEN_MAX, description="the token of the mailed link")


class ForgotPasswordIn(InputModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"email": "seller@example.com"}]}
    )
    # Not validated as an email address: a malformed one simply matches no account (202).
    email: str = Field(min_length=1, max_length=EMAIL_MAX)

    @field_validator("email")
    @classmethod
    def _normalize_email(cls, value: str) -> str:
        return canonical_email(value)


class ResetPasswordIn(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"token": "q3v8YV0m9Jm0yXWkq1bqgB0p6f7C2rYd0cQ0s9n4Z1E", "password": "new horse battery"}
            ]
        },
    )
    token: str = Field(min_length=1, max_length=TOKEN_MAX, description="the token of the mailed link")
    password: str = Field(min_length=MIN_LENGTH, max_length=MAX_LENGTH, description="the new password")


class PasswordChangeIn(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"current_password": "correct horse battery", "new_password": "new horse battery"}]
        },
    )
    current_password: str = Field(min_length=1, max_length=MAX_LENGTH)
    new_password: str = Field(min_length=MIN_LENGTH, max_length=MAX_LENGTH)


class EmailChangeIn(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"email": "new@example.com", "password": "correct horse battery"}]},
    )
    email: EmailAddress = Field(description="the new address; a link is sent there")
    password: str = Field(min_length=1, max_length=MAX_LENGTH, description="the current password")
