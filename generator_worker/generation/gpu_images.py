"""Image plumbing for the GPU backends with PIL and numpy only (no OpenCV, no mediapipe), so they run
on a machine with just torch, transformers and diffusers: decoding request images, cropping to the
output frame, encoding the results and assembling a ``GenerationResult``."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

from PIL import Image, ImageOps, UnidentifiedImageError

from generator_worker.generation.base import (
    GeneratedOutput,
    GenerationRequest,
    GenerationResult,
    ImageFormat,
    InvalidInputError,
)

MAX_INPUT_PIXELS = 40_000_000


def decode(data: bytes, *, what: str) -> Image.Image:
    """RGB PIL image from PNG/JPEG/WebP bytes (EXIF orientation applied); ``InvalidInputError``
    for anything empty, undecodable or absurdly large."""
    if not data:
        raise InvalidInputError(f"{what} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
            if opened.width * opened.height > MAX_INPUT_PIXELS:
                raise InvalidInputError(f"{what} is too large ({opened.width}x{opened.height})")
            image = ImageOps.exif_transpose(opened)
            rgba_or_rgb = image.convert("RGBA") if "A" in image.getbands() else image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, Warning) as error:
        raise InvalidInputError(f"{what} is not a decodable image") from error
    if rgba_or_rgb.mode == "RGBA":  # transparent product cut-outs go onto white
        white = Image.new("RGBA", rgba_or_rgb.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba_or_rgb).convert("RGB")
    return rgba_or_rgb


def cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale and center-crop ``image`` to fill ``width`` x ``height``."""
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)


def pad(
    image: Image.Image, width: int, height: int, fill: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """Scale ``image`` to fit inside ``width`` x ``height`` and pad the rest with ``fill``."""
    return ImageOps.pad(image, (width, height), Image.Resampling.LANCZOS, color=fill)


def round_to(value: int, multiple: int) -> int:
    """``value`` rounded to the nearest positive multiple of ``multiple``."""
    return max(multiple, round(value / multiple) * multiple)


def encode(image: Image.Image, fmt: ImageFormat, jpeg_quality: int) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    if fmt is ImageFormat.JPEG:
        image.convert("RGB").save(buffer, format="JPEG", quality=jpeg_quality)
        return buffer.getvalue(), "image/jpeg"
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


def image_result(
    request: GenerationRequest, images: Sequence[Image.Image], backend: str, timings_ms: dict[str, float]
) -> GenerationResult:
    """Resize ``images`` to the requested size, encode them and add the ``encode`` and ``total``
    timings (``timings_ms`` holds the stages done so far)."""
    import time

    options = request.options
    start = time.perf_counter()
    outputs = []
    for image in images:
        if image.size != (options.width, options.height):
            image = image.resize((options.width, options.height), Image.Resampling.LANCZOS)
        data, media_type = encode(image, options.image_format, options.jpeg_quality)
        outputs.append(GeneratedOutput(data, media_type, options.width, options.height))
    timings = dict(timings_ms)
    timings["encode"] = (time.perf_counter() - start) * 1000
    timings["total"] = sum(timings.values())
    return GenerationResult(outputs=tuple(outputs), backend=backend, timings_ms=timings)
