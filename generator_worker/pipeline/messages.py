"""The pipeline's Kafka messages (DESIGN.md section 3): JSON values, key = job id.

``vto.jobs.requested``: ``job_id, user_id, project_id, kind, inputs, options, pose,
requested_at``. ``inputs`` are storage keys, taken from the ``JobRequested`` event's request
dict (the API resolves product and asset ids to keys when it accepts the job)::

    {"model": "assets/<id>.png", "background": "assets/<id>.png" | null,
     "garments": [{"key": "products/<id>.png", "category": "top", "side": "front"}]}

``vto.jobs.results``: ``job_id, user_id, status ("succeeded" | "failed"), outputs
[{storage_key, media_type, width, height, duration, size}]`` or ``error {code, message,
retryable}``, ``finished_at``.

``vto.jobs.progress``: ``job_id, user_id, status "running", progress 0..1, at``.

Dead-letter topic: the undecodable message as text (and base64), where it came from and why.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from infra.queue.base import Message

VERSION = 1
SUCCEEDED, FAILED, RUNNING = "succeeded", "failed", "running"


class InvalidMessage(ValueError):
    """A message that is JSON but not a valid pipeline message."""


def _uuid(data: dict[str, Any], name: str) -> UUID:
    try:
        return UUID(str(data[name]))
    except (KeyError, ValueError) as exc:
        raise InvalidMessage(f"{name}: a UUID is required") from exc


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidMessage(f"{what} must be a JSON object")
    return value


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class JobRequest:
    job_id: UUID
    user_id: UUID
    kind: str
    project_id: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    pose: str | None = None
    requested_at: str | None = None

    @classmethod
    def from_event(
        cls, user_id: UUID, job_id: UUID, kind: str, request: dict[str, Any], at: datetime
    ) -> JobRequest:
        """From an ``Account.JobRequested`` event (its originator id and fields)."""
        project = request.get("project_id")
        return cls(
            job_id=job_id,
            user_id=user_id,
            kind=kind,
            project_id=None if project is None else str(project),
            inputs=dict(request.get("inputs") or {}),
            options=dict(request.get("options") or {}),
            pose=request.get("pose"),
            requested_at=at.isoformat(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "job_id": str(self.job_id),
            "user_id": str(self.user_id),
            "project_id": self.project_id,
            "kind": self.kind,
            "inputs": self.inputs,
            "options": self.options,
            "pose": self.pose,
            "requested_at": self.requested_at,
        }

    @classmethod
    def from_dict(cls, value: Any) -> JobRequest:
        data = _obj(value, "a job request")
        kind = data.get("kind")
        if not isinstance(kind, str) or not kind:
            raise InvalidMessage("kind: a string is required")
        return cls(
            job_id=_uuid(data, "job_id"),
            user_id=_uuid(data, "user_id"),
            kind=kind,
            project_id=None if data.get("project_id") is None else str(data["project_id"]),
            inputs=_obj(data.get("inputs") or {}, "inputs"),
            options=_obj(data.get("options") or {}, "options"),
            pose=data.get("pose"),
            requested_at=data.get("requested_at"),
        )


@dataclass(frozen=True)
class JobResult:
    job_id: UUID
    user_id: UUID
    status: str
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    finished_at: str | None = None

    @classmethod
    def succeeded(cls, job_id: UUID, user_id: UUID, outputs: list[dict[str, Any]]) -> JobResult:
        return cls(job_id, user_id, SUCCEEDED, outputs, None, now_iso())

    @classmethod
    def failed(cls, job_id: UUID, user_id: UUID, code: str, message: str, retryable: bool) -> JobResult:
        error = {"code": code, "message": message, "retryable": retryable}
        return cls(job_id, user_id, FAILED, [], error, now_iso())

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "job_id": str(self.job_id),
            "user_id": str(self.user_id),
            "status": self.status,
            "outputs": self.outputs,
            "error": self.error,
            "finished_at": self.finished_at,
        }

    @classmethod
    def from_dict(cls, value: Any) -> JobResult:
        data = _obj(value, "a job result")
        status = data.get("status")
        if status == SUCCEEDED:
            outputs = data.get("outputs")
            if not isinstance(outputs, list) or not all(
                isinstance(o, dict) and isinstance(o.get("storage_key"), str) for o in outputs
            ):
                raise InvalidMessage("outputs: a list of {storage_key, media_type, ...} is required")
            return cls(
                _uuid(data, "job_id"),
                _uuid(data, "user_id"),
                SUCCEEDED,
                outputs,
                None,
                data.get("finished_at"),
            )
        if status == FAILED:
            error = _obj(data.get("error"), "error")
            if not isinstance(error.get("code"), str):
                raise InvalidMessage("error.code: a string is required")
            error = {
                "code": error["code"],
                "message": str(error.get("message", "")),
                "retryable": bool(error.get("retryable", False)),
            }
            return cls(
                _uuid(data, "job_id"), _uuid(data, "user_id"), FAILED, [], error, data.get("finished_at")
            )
        raise InvalidMessage(f"status must be {SUCCEEDED!r} or {FAILED!r}, got {status!r}")


def progress(job_id: UUID, user_id: UUID, fraction: float) -> dict[str, Any]:
    return {
        "version": VERSION,
        "job_id": str(job_id),
        "user_id": str(user_id),
        "status": RUNNING,
        "progress": max(0.0, min(1.0, fraction)),
        "at": now_iso(),
    }


def dead_letter(message: Message, error: BaseException, consumer: str) -> dict[str, Any]:
    return {
        "version": VERSION,
        "source_topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "key": message.key,
        "value": message.value.decode("utf-8", errors="replace"),
        "value_base64": base64.b64encode(message.value).decode("ascii"),
        "error": f"{type(error).__name__}: {error}",
        "consumer": consumer,
        "at": now_iso(),
    }
