"""Bodies of the webhook routes: the signing secret, a job's deliveries and their attempts."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from pipeline.webhooks.events import webhook_id


class SecretOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"key": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw0JGy4sGDYlA="}}
    )
    key: str


class AttemptOut(BaseModel):
    attempted_at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None
    response_body: str | None
    manual: bool

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> AttemptOut:
        return cls(
            attempted_at=row["attempted_at"],
            status_code=row["status_code"],
            duration_ms=row["duration_ms"],
            error=row["error"],
            response_body=row["response_body"],
            manual=row["manual"],
        )


class DeliveryOut(BaseModel):
    """One event of the job and what became of it: ``pending`` (an attempt is due at
    ``next_attempt_at``), ``delivered`` (2xx), ``failed`` (every attempt of the schedule
    failed) or ``stopped`` (the endpoint answered 410 Gone)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "0c8e6d4a-3c1b-5f2e-9a7d-6b5c4d3e2f10",
                "webhook_id": "msg_0c8e6d4a3c1b5f2e9a7d6b5c4d3e2f10",
                "event": "job.completed",
                "url": "https://example.com/hooks/vto",
                "status": "delivered",
                "created_at": "2026-11-26T10:00:31Z",
                "next_attempt_at": None,
                "finished_at": "2026-11-26T10:00:36Z",
                "attempts": [
                    {
                        "attempted_at": "2026-11-26T10:00:31Z",
                        "status_code": 500,
                        "duration_ms": 41,
                        "error": "the endpoint answered 500",
                        "response_body": "",
                        "manual": False,
                    },
                    {
                        "attempted_at": "2026-11-26T10:00:36Z",
                        "status_code": 200,
                        "duration_ms": 12,
                        "error": None,
                        "response_body": "ok",
                        "manual": False,
                    },
                ],
            }
        }
    )
    id: uuid.UUID
    webhook_id: str
    event: str
    url: str
    status: Literal["pending", "delivered", "failed", "stopped"]
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    redelivery_requested: bool
    attempts: list[AttemptOut]

    @classmethod
    def of(cls, row: Mapping[Any, Any], attempts: Sequence[Mapping[Any, Any]]) -> DeliveryOut:
        return cls(
            id=row["id"],
            webhook_id=webhook_id(row["id"]),
            event=row["event_type"],
            url=row["url"],
            status=row["state"],
            created_at=row["created_at"],
            next_attempt_at=row["next_attempt_at"] if row["state"] == "pending" else None,
            finished_at=row["finished_at"],
            redelivery_requested=row["redeliver_requested_at"] is not None,
            attempts=[AttemptOut.of(a) for a in attempts],
        )
