"""Bodies of the /vto routes."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from command_api.catalog.media import UrlSigner
from command_api.inputs import InputModel
from generator_worker.generation import JobKind, PoseHint
from ledger.status import JobStatus
from pipeline.webhooks.events import WebhookEvent
from pipeline.webhooks.targets import MAX_URL_LENGTH


class JobOptions(InputModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(default=768, ge=128, le=2048)
    height: int = Field(default=1024, ge=128, le=2048)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    num_outputs: int = Field(default=1, ge=1, le=4)


class JobIn(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "project_id": "0b6f3c52-62c8-4d8e-9d0e-2f9a5d6b7c11",
                "kind": "image",
                "product_ids": ["9a1c3d6e-8b2f-4c7a-9e1d-3f5b7c9d1e2f"],
                "model_asset_id": "4e2d1c0b-9a8f-4e7d-8c6b-5a4f3e2d1c0b",
                "background_asset_id": None,
                "pose": "front",
                "options": {"width": 768, "height": 1024, "seed": 7, "num_outputs": 1},
            }
        },
    )
    project_id: uuid.UUID
    kind: JobKind
    product_ids: list[uuid.UUID] = Field(min_length=1, max_length=4)
    model_asset_id: uuid.UUID
    background_asset_id: uuid.UUID | None = None
    pose: PoseHint = PoseHint.AUTO
    options: JobOptions = Field(default_factory=JobOptions)
    webhook: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="An http(s) URL that receives the job's events as signed webhooks (Standard "
        "Webhooks; docs/webhooks.md). Private, loopback and link-local targets are refused (422 "
        "webhook_url_not_allowed).",
    )
    webhook_events_filter: list[WebhookEvent] | None = Field(
        default=None,
        min_length=1,
        max_length=len(WebhookEvent),
        description="The events sent to the webhook: start (job.started), progress (job.progress), "
        "completed (job.completed). Default: all of them.",
    )
    deadline_s: Annotated[int, Field(strict=True, gt=0)] | None = Field(
        default=None,
        description="Seconds from the order: a job not finished by then is canceled and refunded "
        "(refund cause deadline), queued or running. At most VTO_JOB_MAX_DEADLINE_S; with a "
        "Cancel-After header too, the earlier deadline wins (422 invalid_deadline when malformed; "
        "docs/job-deadlines.md).",
    )

    @model_validator(mode="after")
    def _filter_needs_a_webhook(self) -> JobIn:
        if self.webhook_events_filter is not None and self.webhook is None:
            raise ValueError("webhook_events_filter needs a webhook")
        return self


class Charge(BaseModel):
    source: str
    amount: int


class Refund(BaseModel):
    source: str
    amount: int
    cause: str | None


class OutputOut(BaseModel):
    url: str
    media_type: str | None
    width: int | None
    height: int | None
    duration: float | None = None

    @classmethod
    def of(cls, output: Mapping[Any, Any], sign: UrlSigner) -> OutputOut:
        return cls(
            url=sign(output.get("storage_key")),
            media_type=output.get("media_type"),
            width=output.get("width"),
            height=output.get("height"),
            duration=output.get("duration"),
        )


@dataclass(frozen=True)
class QueueSpot:
    """A queued job's place: ``position`` jobs ahead (at least that many when not ``exact``);
    ``eta_s`` until it starts (or None)."""

    position: int
    eta_s: float | None
    exact: bool = True


class JobOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "6f1c1c9e-3c8e-4a57-9e0b-5f0b8f0f3a11",
                "status": "queued",
                "kind": "image",
                "project_id": "0b6f3c52-62c8-4d8e-9d0e-2f9a5d6b7c11",
                "charge": {"source": "ticket:lookbook", "amount": 1},
                "refund": None,
                "outputs": [],
                "error": None,
                "created_at": "2026-11-26T10:00:00Z",
                "product_ids": ["9a1c3d6e-8b2f-4c7a-9e1d-3f5b7c9d1e2f"],
                "model_asset_id": "4e2d1c0b-9a8f-4e7d-8c6b-5a4f3e2d1c0b",
                "background_asset_id": None,
                "pose": "front",
                "options": {"width": 768, "height": 1024, "seed": 7, "num_outputs": 1},
                "deadline_s": 600,
                "deadline_at": "2026-11-26T10:10:00Z",
            }
        }
    )
    id: uuid.UUID
    status: JobStatus
    kind: str
    project_id: str | None
    charge: Charge | None
    refund: Refund | None = None
    outputs: list[OutputOut] = Field(default_factory=list)
    error: dict[str, Any] | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: float | None = Field(
        default=None, description="0.0 to 1.0, from the worker's progress messages; null before it starts."
    )
    queue_position: int | None = Field(
        default=None,
        description="While queued: how many accepted jobs that have not started are ahead of it, "
        "over the whole worker pool (0: it is next). Null otherwise (docs/job-api.md).",
    )
    eta_s: float | None = Field(
        default=None,
        description="While queued: seconds until it starts, estimated from the jobs started over "
        "the last VTO_QUEUE_ETA_WINDOW_S; null when none started in that window.",
    )
    queue_position_exact: bool | None = Field(
        default=None,
        description="While queued: false when more than VTO_QUEUE_POSITION_EXACT_MAX jobs are ahead; "
        "queue_position (and eta_s) are then lower bounds. Null when not queued.",
    )
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    # The job's inputs, as ordered (null for a job ordered before they were echoed).
    product_ids: list[uuid.UUID] | None = None
    model_asset_id: uuid.UUID | None = None
    background_asset_id: uuid.UUID | None = None
    pose: str | None = None
    options: dict[str, Any] | None = None
    deadline_s: int | None = Field(default=None, description="The deadline the order set (null: none).")
    deadline_at: datetime | None = Field(
        default=None, description="When the job is canceled and refunded if it has not finished."
    )

    @classmethod
    def of(cls, row: Mapping[Any, Any], sign: UrlSigner, queue: QueueSpot | None = None) -> JobOut:
        """A row of the job read model (``repository.job_row``), with its place in the queue
        while it is queued."""
        request = row["request"] or {}
        return cls(
            **inputs_of(request),
            deadline_at=row["deadline_at"],
            id=row["job_id"],
            status=row["shown_status"],
            kind=row["kind"],
            project_id=row["project_id"],
            charge=Charge(source=row["charge_source"], amount=row["charge_amount"])
            if row["charge_source"]
            else None,
            refund=Refund(source=row["refund_source"], amount=row["refund_amount"], cause=row["refund_cause"])
            if row["refund_source"]
            else None,
            outputs=[OutputOut.of(output, sign) for output in row["outputs"] or []],
            error=row["error"],
            created_at=row["created_at"],
            started_at=row["shown_started_at"],
            finished_at=row["finished_at"],
            progress=row["progress"],
            queue_position=queue.position if queue else None,
            eta_s=queue.eta_s if queue else None,
            queue_position_exact=queue.exact if queue else None,
            webhook=request.get("webhook"),
            webhook_events_filter=request.get("webhook_events_filter"),
        )


def inputs_of(request: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs a job's request records (``service.job_request``), as ``JobOut`` echoes them."""
    return {
        "product_ids": request.get("product_ids"),
        "model_asset_id": request.get("model_asset_id"),
        "background_asset_id": request.get("background_asset_id"),
        "pose": request.get("pose"),
        "options": request.get("options"),
        "deadline_s": request.get("deadline_s"),
    }


class GalleryItem(BaseModel):
    job_id: uuid.UUID
    index: int
    url: str
    media_type: str | None
    width: int | None
    height: int | None
    duration: float | None
    created_at: datetime
    position: int

    @classmethod
    def of(cls, row: Mapping[Any, Any], sign: UrlSigner) -> GalleryItem:
        """A row of the gallery read model."""
        return cls(
            **OutputOut.of(row, sign).model_dump(),
            job_id=row["job_id"],
            index=row["output_index"],
            created_at=row["created_at"],
            position=row["position"],
        )
