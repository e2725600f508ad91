"""The generator interface: request and result types, backend descriptions and typed errors.

Everything crossing this boundary is plain data: images travel as encoded bytes (PNG or JPEG
in; PNG, JPEG or MP4 out), so the worker can hand storage blobs straight through.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from enum import StrEnum


class JobKind(StrEnum):
    IMAGE = "image"
    VIDEO = "video"


class GarmentCategory(StrEnum):
    TOP = "top"
    BOTTOM = "bottom"
    DRESS = "dress"
    OUTER = "outer"


class GarmentSide(StrEnum):
    FRONT = "front"
    BACK = "back"


class PoseHint(StrEnum):
    """Which way the person in the model photo faces; AUTO reads it from the landmarks."""

    AUTO = "auto"
    FRONT = "front"
    BACK = "back"


class ImageFormat(StrEnum):
    PNG = "png"
    JPEG = "jpeg"


@dataclass(frozen=True)
class GarmentImage:
    """One product photo of a garment: encoded bytes, what it is and which side it shows."""

    data: bytes
    category: GarmentCategory
    side: GarmentSide = GarmentSide.FRONT


@dataclass(frozen=True)
class GenerationOptions:
    width: int = 768
    height: int = 1024
    seed: int = 0
    num_outputs: int = 1
    image_format: ImageFormat = ImageFormat.PNG
    jpeg_quality: int = 92
    # video only; None: the backend's own (the lookbook clip: 24 fps, 2 s an output; Wan: the
    # model's frame rate and the clip length it was trained on)
    fps: int | None = None
    seconds_per_output: float | None = None


@dataclass(frozen=True)
class GenerationRequest:
    kind: JobKind
    garments: tuple[GarmentImage, ...]
    model_photo: bytes
    background: bytes | None = None
    pose_hint: PoseHint = PoseHint.AUTO
    options: GenerationOptions = field(default_factory=GenerationOptions)


@dataclass(frozen=True)
class GeneratedOutput:
    data: bytes
    media_type: str  # "image/png", "image/jpeg" or "video/mp4"
    width: int
    height: int
    frames: int = 1
    fps: float | None = None  # videos: the frame rate the clip was encoded at

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    @property
    def duration_s(self) -> float | None:
        """A video's length in seconds (frames / fps); None for images."""
        return self.frames / self.fps if self.fps else None


@dataclass(frozen=True)
class GenerationResult:
    outputs: tuple[GeneratedOutput, ...]
    backend: str
    timings_ms: dict[str, float]  # stage name -> milliseconds, plus "total"


@dataclass(frozen=True)
class BackendInfo:
    """What a backend needs and offers, so a job can be checked before it is queued."""

    name: str
    license: str
    commercial_use: bool
    job_kinds: frozenset[JobKind]
    categories: frozenset[GarmentCategory]
    needs_background: bool
    min_size: tuple[int, int]  # (width, height)
    max_size: tuple[int, int]
    max_garments: int
    max_outputs: int
    requires_weights: bool = False
    notes: str = ""

    def supports_size(self, width: int, height: int) -> bool:
        return (
            self.min_size[0] <= width <= self.max_size[0] and self.min_size[1] <= height <= self.max_size[1]
        )


# --- errors ---------------------------------------------------------------------------------


class GenerationError(Exception):
    """Base of every generator error. ``retryable`` tells the worker whether to try again."""

    retryable: bool = False
    code: str = "generation_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(GenerationError):
    """The request itself is unusable (undecodable image, unsupported size...). Not retryable."""

    retryable = False
    code = "invalid_input"


class NoPersonFoundError(InvalidInputError):
    code = "no_person_found"


class GarmentNotFoundError(InvalidInputError):
    code = "garment_not_found"


class UnsupportedRequestError(InvalidInputError):
    code = "unsupported_request"


class ResourceError(GenerationError):
    """A transient shortage (memory, device busy, injected chaos). Retryable."""

    retryable = True
    code = "resource_error"


class InjectedFailureError(ResourceError):
    code = "injected_failure"


class BackendUnavailableError(GenerationError):
    """The backend cannot start (missing weights or packages): a configuration error."""

    retryable = False
    code = "backend_unavailable"


class StorageFailedError(ResourceError):
    """The worker could not read a job's inputs or write its outputs (storage unreachable,
    disk full...). Retryable, within the job's attempts."""

    code = "storage_error"


class InternalError(GenerationError):
    """An exception no backend declares (a bug: ``IndexError``, ``ValueError``, ``cv2.error``...).
    Not retryable: the same input would fail the same way. The message names the exception's
    type only; the worker logs the traceback."""

    retryable = False
    code = "internal_error"

    def __init__(self, cause: BaseException) -> None:
        kind = type(cause)
        name = (
            kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        )
        super().__init__(f"the generator failed unexpectedly ({name})")
        self.cause = cause


class GenerationTimeoutError(GenerationError):
    """The job ran past the job timeout (``VTO_JOB_TIMEOUT_S``): the worker stopped waiting for
    it. Not retryable. The same code as a reservation the sweeper expires."""

    retryable = False
    code = "timeout"


class AttemptsExhaustedError(GenerationError):
    """Earlier deliveries of the job used up its attempts (``VTO_WORKER_MAX_ATTEMPTS``) without
    an outcome (the worker crashed or was killed mid-job). Not retryable."""

    retryable = False
    code = "attempts_exhausted"


# --- interface ------------------------------------------------------------------------------


class Generator(abc.ABC):
    """A try-on backend. Implementations must be deterministic for a given ``options.seed``."""

    info: BackendInfo

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> GenerationResult: ...

    def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult | GenerationError]:
        """Run several requests; a failing one yields its error in place of a result."""
        results: list[GenerationResult | GenerationError] = []
        for request in requests:
            try:
                results.append(self.generate(request))
            except GenerationError as error:
                results.append(error)
        return results

    def validate(self, request: GenerationRequest) -> None:
        """Reject requests this backend cannot serve, before any work is done."""
        info = self.info
        options = request.options
        if request.kind not in info.job_kinds:
            raise UnsupportedRequestError(f"{info.name} does not produce {request.kind.value} jobs")
        if not request.garments:
            raise InvalidInputError("at least one garment image is required")
        if len(request.garments) > info.max_garments:
            raise UnsupportedRequestError(f"{info.name} takes at most {info.max_garments} garment images")
        for garment in request.garments:
            if garment.category not in info.categories:
                raise UnsupportedRequestError(
                    f"{info.name} does not support garment category {garment.category.value}"
                )
        if info.needs_background and request.background is None:
            raise InvalidInputError(f"{info.name} needs a background image")
        if not info.supports_size(options.width, options.height):
            raise UnsupportedRequestError(
                f"size {options.width}x{options.height} outside "
                f"{info.min_size[0]}x{info.min_size[1]}..{info.max_size[0]}x{info.max_size[1]}"
            )
        if options.width % 2 or options.height % 2:
            raise UnsupportedRequestError("width and height must be even")
        if not 1 <= options.num_outputs <= info.max_outputs:
            raise UnsupportedRequestError(f"num_outputs must be within 1..{info.max_outputs}")
        if request.kind is JobKind.VIDEO and options.fps is not None and not (1 <= options.fps <= 60):
            raise UnsupportedRequestError("fps must be within 1..60")
        seconds = options.seconds_per_output
        if request.kind is JobKind.VIDEO and seconds is not None and not (0.25 <= seconds <= 10):
            raise UnsupportedRequestError("seconds_per_output must be within 0.25..10")
        if not 1 <= options.jpeg_quality <= 100:
            raise InvalidInputError("jpeg_quality must be within 1..100")

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release models and devices."""
