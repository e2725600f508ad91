"""Request and response bodies of /points and /admin."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, model_validator

from command_api.inputs import InputModel
from command_api.users.emails import EmailAddress


class SubscriptionOut(BaseModel):
    plan: str
    period_end: datetime
    daily_quota: int | None
    used_today: int


class LotOut(BaseModel):
    """A lot (a grant) of one source that can still be burnt: what it has ``left``."""

    id: int = Field(description="The lot's id: the stream version of the event that granted it.")
    left: int = Field(description="Points left: granted less burnt (reserved) and expired.")
    granted: int
    category: str = Field(description="`paid` or `promotional`.")
    expires_at: datetime | None = Field(description="When what is left expires (null: never).")
    granted_at: datetime


class PointsOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "credit": 42,
                "tickets": {"lookbook": 3, "video": 0},
                "subscription": {
                    "plan": "pro",
                    "period_end": "2026-12-31T00:00:00Z",
                    "daily_quota": 50,
                    "used_today": 7,
                },
                "pending_reservations": 1,
                "lots": {
                    "credit": [
                        {
                            "id": 7,
                            "left": 12,
                            "granted": 20,
                            "category": "promotional",
                            "expires_at": "2026-12-10T00:00:00Z",
                            "granted_at": "2026-11-10T00:00:00Z",
                        },
                        {
                            "id": 2,
                            "left": 30,
                            "granted": 30,
                            "category": "paid",
                            "expires_at": None,
                            "granted_at": "2026-11-01T00:00:00Z",
                        },
                    ],
                    "ticket:lookbook": [],
                    "ticket:video": [],
                },
                "expiring_within_7_days": {"credit": 12, "ticket:lookbook": 0, "ticket:video": 0},
            }
        }
    )
    credit: int
    tickets: dict[str, int]
    subscription: SubscriptionOut | None
    pending_reservations: int
    lots: dict[str, list[LotOut]] = Field(
        default_factory=dict,
        description="Each source's lots that can still be burnt (`credit`, `ticket:<type>`), in "
        "the order a charge burns them: earliest expiry first (never last), promotional before "
        "paid, oldest first.",
    )
    expiring_within_7_days: dict[str, int] = Field(
        default_factory=dict,
        description="Per source, the points left in lots that expire within the next 7 days.",
    )


class UsageLine(BaseModel):
    job_id: uuid.UUID | None
    type: str
    source: str
    amount: int
    balance_after: int | None
    reason: str | None
    created_at: datetime
    position: int


class RefundIn(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"job_id": "6f1c1c9e-3c8e-4a57-9e0b-5f0b8f0f3a11", "reason": "blurry"}},
    )
    job_id: uuid.UUID
    reason: str = Field(min_length=1, max_length=500)


class RefundOut(BaseModel):
    job_id: uuid.UUID
    user_id: uuid.UUID
    source: str
    amount: int


# Amounts are JSON integers only (``StrictInt``): ``true``, ``"7"`` or ``7.0`` are 422, never
# read as 1 or 7.
class SubscriptionGrant(InputModel):
    model_config = ConfigDict(extra="forbid")
    plan: str = Field(min_length=1, max_length=64)
    days: StrictInt = Field(ge=1, le=3660)
    daily_quota: StrictInt | None = Field(default=None, ge=1, le=1_000_000)


class GrantIn(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "email": "seller@example.com",
                "credits": 100,
                "tickets": {"lookbook": 10},
                "subscription": {"plan": "pro", "days": 30, "daily_quota": 50},
                "reason": "launch promotion",
            }
        },
    )
    email: EmailAddress | None = None
    user_id: uuid.UUID | None = None
    credits: StrictInt = Field(default=0, ge=0, le=10_000_000)
    tickets: dict[str, StrictInt] = Field(default_factory=dict)
    subscription: SubscriptionGrant | None = None
    reason: str = Field(min_length=1, max_length=500)
    expires_at: AwareDatetime | None = Field(
        default=None,
        description="When the granted credits and tickets expire (an instant to come, with its "
        "time zone); omitted: never.",
    )
    category: Literal["paid", "promotional"] | None = Field(
        default=None, description="The category of the granted credits and tickets (default `paid`)."
    )

    @model_validator(mode="after")
    def _one_target_and_something(self) -> GrantIn:
        if (self.email is None) == (self.user_id is None):
            raise ValueError("give exactly one of email or user_id")
        if any(n < 1 or n > 1_000_000 for n in self.tickets.values()):
            raise ValueError("ticket counts must be within 1..1000000")
        if not self.credits and not self.tickets and self.subscription is None:
            raise ValueError("grant credits, tickets or a subscription")
        if (self.expires_at is not None or self.category is not None) and not (self.credits or self.tickets):
            raise ValueError("expires_at and category are for credits and tickets")
        if self.expires_at is not None and self.expires_at <= datetime.now(UTC):
            raise ValueError("expires_at must be in the future")
        return self


class GrantOut(BaseModel):
    user_id: uuid.UUID
    points: PointsOut
