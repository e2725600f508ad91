"""The webhook events of a job, the filter that chooses them, each message's stable id and
its body.

A message is one event of one job: ``job.started`` (key ``started``), ``job.progress`` (key:
its sequence number), ``job.completed`` (key: the final status; a success that arrives after
the job expired and was refunded is a second ``job.completed``, key ``succeeded``). Its id is
derived from (job, type, key), so the ``webhook-id`` header is the same on every attempt and
after any crash or restart, wherever the message is created again."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class WebhookEvent(StrEnum):
    """The names of ``webhook_events_filter``."""

    START = "start"
    PROGRESS = "progress"
    COMPLETED = "completed"


class EventType(StrEnum):
    """The ``type`` of a webhook's body."""

    STARTED = "job.started"
    PROGRESS = "job.progress"
    COMPLETED = "job.completed"


ALL_EVENTS: tuple[WebhookEvent, ...] = tuple(WebhookEvent)
FILTER_OF = {
    EventType.STARTED: WebhookEvent.START,
    EventType.PROGRESS: WebhookEvent.PROGRESS,
    EventType.COMPLETED: WebhookEvent.COMPLETED,
}
# The uuid5 namespace of message ids (fixed: changing it would change every webhook-id).
NAMESPACE = uuid.UUID("5d0f6a63-2f5e-4c3b-9a57-1b7f4f0c9e21")


def events_filter(names: Iterable[str] | None) -> list[str]:
    """The filter as the job request records it: its names, sorted, each once (all of them
    when none was given)."""
    return sorted({WebhookEvent(name).value for name in (ALL_EVENTS if names is None else names)})


def requested_webhook(request: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """The webhook URL and filter a ``JobRequested`` event's request names, if any."""
    url = request.get("webhook")
    if not isinstance(url, str) or not url:
        return None
    names = request.get("webhook_events_filter")
    wanted = [n for n in names if n in WebhookEvent.__members__.values()] if isinstance(names, list) else None
    return url, events_filter(wanted)


def message_id(job_id: uuid.UUID, event_type: EventType, key: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{job_id}/{event_type.value}/{key}")


def webhook_id(message: uuid.UUID) -> str:
    """The ``webhook-id`` header of a message (no ``.``, as the signature scheme requires)."""
    return f"msg_{message.hex}"


def iso(at: datetime) -> str:
    """``2026-11-26T12:00:00.123456Z``."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def body(event_type: str, event_at: datetime, data: Mapping[str, Any]) -> str:
    """The webhook's body: ``{"type", "timestamp", "data"}``, minified (the bytes signed are the
    bytes sent)."""
    payload = {"type": event_type, "timestamp": iso(event_at), "data": data}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
