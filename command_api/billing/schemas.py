"""Response bodies of the statement and the usage report."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from command_api.inputs import InputModel


class StatementLine(BaseModel):
    """One ``point_usage`` line: ``amount`` is the signed change of ``source``'s balance and
    ``balance_after`` the balance after it (null on the subscription, which has none)."""

    position: int
    created_at: datetime
    type: str = Field(description="grant, reservation, settlement, refund, expiry or adjustment")
    source: str
    category: str | None = Field(description="paid or promotional on a line that grants a lot, else null")
    amount: int
    balance_after: int | None
    job_id: uuid.UUID | None = Field(description="the job of a reservation, settlement or refund")
    reason: str | None


class Statement(BaseModel):
    """A period's statement: per source, ``opening`` plus the ``amount`` of every line of the
    period is ``closing``. The lines come in pages (``next_cursor``); every page repeats the
    balances."""

    model_config = ConfigDict(
        populate_by_name=True,
        json_schema_extra={
            "example": {
                "from": "2026-11-01T00:00:00Z",
                "to": "2026-12-01T00:00:00Z",
                "opening": {"credit": 40, "ticket:lookbook": 2, "ticket:video": 0},
                "closing": {"credit": 135, "ticket:lookbook": 1, "ticket:video": 0},
                "items": [
                    {
                        "position": 812,
                        "created_at": "2026-11-03T09:12:44.118000Z",
                        "type": "grant",
                        "source": "credit",
                        "category": "paid",
                        "amount": 100,
                        "balance_after": 140,
                        "job_id": None,
                        "reason": "top-up",
                    }
                ],
                "next_cursor": None,
            }
        },
    )
    from_: datetime = Field(alias="from")
    to: datetime
    opening: dict[str, int]
    closing: dict[str, int]
    items: list[StatementLine]
    next_cursor: str | None


class UsageRow(BaseModel):
    """One (day or user, source) of the usage report: points charged (reserved), refunded,
    expired, adjusted (signed), granted per category, and the jobs settled."""

    key: str = Field(description="the UTC day (YYYY-MM-DD) or the user id")
    source: str
    charged: int
    refunded: int
    expired: int
    adjusted: int
    granted_paid: int
    granted_promotional: int
    settled_jobs: int


class UsageReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: datetime = Field(alias="from")
    to: datetime
    group_by: Literal["day", "user"]
    rows: list[UsageRow]


class AlertsIn(InputModel):
    """The balance alerts, all at once: a threshold per source (null or absent: none)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {"credits_below": 20, "lookbook_tickets_below": 2, "video_tickets_below": None}
        },
    )
    credits_below: StrictInt | None = Field(default=None, ge=1, le=1_000_000_000)
    lookbook_tickets_below: StrictInt | None = Field(default=None, ge=1, le=1_000_000_000)
    video_tickets_below: StrictInt | None = Field(default=None, ge=1, le=1_000_000_000)


class AlertsOut(BaseModel):
    """The thresholds: a ``balance.low`` email (and webhook) when a balance goes from the
    threshold or more to less; null: no alert."""

    credits_below: int | None
    lookbook_tickets_below: int | None
    video_tickets_below: int | None
