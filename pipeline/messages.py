"""The pipeline's Kafka messages (docs/operations.md "The messages"): JSON values, key = job id.

``vto.jobs.requested``: ``job_id, user_id, project_id, kind, inputs, options, pose,
requested_at, deadline_at`` (null: the order set no deadline). ``inputs`` are storage keys,
taken from the ``JobRequested`` event's request dict (the API resolves product and asset ids
to keys when it accepts the job)::

    {"model": "assets/<id>.png", "background": "assets/<id>.png" | null,
     "garments": [{"key": "products/<id>.png", "category": "top", "side": "front"}]}

``vto.jobs.results``: ``job_id, user_id, status ("succeeded" | "failed"), outputs
[{storage_key, media_type, width, height, duration, size}]`` or ``error {code, message,
retryable}``, ``finished_at``.

``vto.jobs.progress``: ``job_id, user_id, status "running", progress 0..1, at``.

Dead-letter topic: a message no consumer could use, as text (and base64), where it came from,
``reason`` (``invalid_message``: undecodable or invalid; or the code of a job the worker gave
up on for a reason other than its inputs, see ``Worker``), ``error`` and ``attempts``.

Each is a pydantic model (``JobRequest``, ``JobResult``, ``JobProgress``, ``DeadLetter``):
``to_dict()`` is the JSON value (with ``version``), ``from_dict()`` reads one and raises
``InvalidMessage`` when it is not valid (the consumers send it to the dead-letter topic).
Statuses are ``ledger.status.JobStatus`` values.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from infra.queue.base import Message
from ledger.status import JobStatus
from projections.jobs import deadline_at as deadline_of

VERSION = 1


class InvalidMessage(ValueError):
    """A message that is JSON but not a valid pipeline message."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _has_storage_keys(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not all(isinstance(o.get("storage_key"), str) for o in outputs):
        raise ValueError("a list of {storage_key, media_type, ...} is required")
    return outputs


def _clamp(fraction: float) -> float:
    return max(0.0, min(1.0, fraction))


# An optional field taken as text (``str(value)``) whatever JSON value it was sent as.
OptionalText = Annotated[str | None, BeforeValidator(_text_or_none)]
# A JSON object; absent, null or empty means {}.
JsonObject = Annotated[dict[str, Any], BeforeValidator(lambda value: value or {})]
Fraction = Annotated[float, AfterValidator(_clamp)]


class PipelineMessage(BaseModel):
    """A message's JSON value: ``to_dict()`` (with ``version``) and ``from_dict()``, which
    raises ``InvalidMessage`` for a value that is not a valid message."""

    model_config = ConfigDict(frozen=True)

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, **self.model_dump(mode="json")}

    @classmethod
    def from_dict(cls, value: Any) -> Self:
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            raise InvalidMessage(_describe(cls, exc)) from exc


def _describe(model: type[BaseModel], error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or f"a {model.__name__}"
    return f"{where}: {first['msg']}"


class JobRequest(PipelineMessage):
    job_id: UUID
    user_id: UUID
    kind: Annotated[str, Field(strict=True, min_length=1)]
    project_id: OptionalText = None
    inputs: JsonObject = Field(default_factory=dict)
    options: JsonObject = Field(default_factory=dict)
    pose: OptionalText = None
    requested_at: OptionalText = None
    deadline_at: datetime | None = None  # the order's deadline (None: none); docs/job-deadlines.md

    @classmethod
    def from_event(
        cls, user_id: UUID, job_id: UUID, kind: str, request: dict[str, Any], at: datetime
    ) -> JobRequest:
        """From an ``Account.JobRequested`` event (its originator id and fields)."""
        return cls(
            job_id=job_id,
            user_id=user_id,
            kind=kind,
            project_id=request.get("project_id"),
            inputs=dict(request.get("inputs") or {}),
            options=dict(request.get("options") or {}),
            pose=request.get("pose"),
            requested_at=at.isoformat(),
            deadline_at=deadline_of(request, at),
        )


class JobError(BaseModel):
    """A failed job's error: ``code`` (a string), ``message`` and ``retryable`` (taken as
    text and as a truth value, whatever they were sent as)."""

    code: Annotated[str, Field(strict=True)]
    message: Annotated[str, BeforeValidator(str)] = ""
    retryable: Annotated[bool, BeforeValidator(bool)] = False


class _Succeeded(BaseModel):
    status: Literal[JobStatus.SUCCEEDED]
    outputs: Annotated[list[dict[str, Any]], AfterValidator(_has_storage_keys)]


class _Failed(BaseModel):
    status: Literal[JobStatus.FAILED]
    error: JobError


class JobResult(PipelineMessage):
    """``succeeded`` with ``outputs`` (each with a ``storage_key``) or ``failed`` with an
    ``error`` (``JobError``, kept as its dict); the other field is dropped on decoding."""

    job_id: UUID
    user_id: UUID
    status: Literal[JobStatus.SUCCEEDED, JobStatus.FAILED]
    outputs: list[dict[str, Any]] = Field(default_factory=list)
    error: dict[str, Any] | None = None
    finished_at: OptionalText = None

    @classmethod
    def succeeded(cls, job_id: UUID, user_id: UUID, outputs: list[dict[str, Any]]) -> JobResult:
        return cls(
            job_id=job_id, user_id=user_id, status=JobStatus.SUCCEEDED, outputs=outputs, finished_at=now_iso()
        )

    @classmethod
    def failed(cls, job_id: UUID, user_id: UUID, code: str, message: str, retryable: bool) -> JobResult:
        error = JobError(code=code, message=message, retryable=retryable).model_dump()
        return cls(
            job_id=job_id, user_id=user_id, status=JobStatus.FAILED, error=error, finished_at=now_iso()
        )

    @classmethod
    def from_dict(cls, value: Any) -> Self:
        """Validates the part of the status (``_Succeeded`` or ``_Failed``) first."""
        status = value.get("status") if isinstance(value, dict) else None
        try:
            if status == JobStatus.SUCCEEDED:
                value = {**value, **_Succeeded.model_validate(value).model_dump(), "error": None}
            elif status == JobStatus.FAILED:
                value = {**value, "outputs": [], "error": _Failed.model_validate(value).error.model_dump()}
        except ValidationError as exc:
            raise InvalidMessage(_describe(cls, exc)) from exc
        return super().from_dict(value)


class JobProgress(PipelineMessage):
    """A worker's progress on a job (``status`` is always ``running``)."""

    job_id: UUID
    user_id: UUID | None = None
    status: Literal[JobStatus.RUNNING] = JobStatus.RUNNING
    progress: Fraction = 0.0
    at: OptionalText = None

    @classmethod
    def of(cls, job_id: UUID, user_id: UUID, fraction: float) -> JobProgress:
        return cls(job_id=job_id, user_id=user_id, progress=fraction, at=now_iso())


INVALID_MESSAGE = "invalid_message"


class DeadLetter(PipelineMessage):
    """A message no consumer could use (as text and base64), where it came from and why."""

    source_topic: str
    partition: int
    offset: int
    key: str | None
    value: str
    value_base64: str
    reason: str = INVALID_MESSAGE
    error: str
    attempts: int | None = None
    consumer: str
    at: str

    @classmethod
    def of(
        cls,
        message: Message,
        error: BaseException | str,
        consumer: str,
        *,
        reason: str = INVALID_MESSAGE,
        attempts: int | None = None,
    ) -> DeadLetter:
        return cls(
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value.decode("utf-8", errors="replace"),
            value_base64=base64.b64encode(message.value).decode("ascii"),
            reason=reason,
            error=error if isinstance(error, str) else f"{type(error).__name__}: {error}",
            attempts=attempts,
            consumer=consumer,
            at=now_iso(),
        )
