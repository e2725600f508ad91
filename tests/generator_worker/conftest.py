"""Shared inputs: public-domain photos from scikit-image, garments and backgrounds drawn here."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from generator_worker.generation import (
    GarmentCategory,
    GarmentImage,
    GarmentSide,
    GenerationOptions,
    GenerationRequest,
    JobKind,
)
from generator_worker.generation.offline import OfflineGenerator

skimage_data = pytest.importorskip("skimage.data")

RED = (220, 30, 30)
BLUE_BG = (40, 90, 220)


def encode_png(rgb: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def decode(data: bytes) -> NDArray[np.uint8]:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def draw_tshirt(color: tuple[int, int, int] = RED) -> NDArray[np.uint8]:
    """A flat-lay T-shirt on a light studio background."""
    img = np.full((440, 400, 3), 245, np.uint8)
    outline = np.array(
        [
            [130, 20],
            [170, 20],
            [200, 45],
            [230, 20],
            [270, 20],
            [370, 80],
            [340, 150],
            [300, 125],
            [300, 420],
            [100, 420],
            [100, 125],
            [60, 150],
            [30, 80],
        ],
        np.int32,
    )
    cv2.fillPoly(img, [outline], color)
    return img


def draw_trousers(color: tuple[int, int, int] = (30, 40, 160)) -> NDArray[np.uint8]:
    img = np.full((500, 300, 3), 250, np.uint8)
    outline = np.array(
        [[60, 20], [240, 20], [260, 480], [170, 480], [150, 150], [130, 480], [40, 480]], np.int32
    )
    cv2.fillPoly(img, [outline], color)
    return img


def draw_dress(color: tuple[int, int, int] = (150, 40, 160)) -> NDArray[np.uint8]:
    img = np.full((600, 400, 3), 250, np.uint8)
    outline = np.array([[140, 20], [260, 20], [280, 200], [360, 580], [40, 580], [120, 200]], np.int32)
    cv2.fillPoly(img, [outline], color)
    return img


def uniform(color: tuple[int, int, int], w: int = 600, h: int = 800) -> NDArray[np.uint8]:
    return np.full((h, w, 3), color, np.uint8)


@pytest.fixture(scope="session")
def astronaut() -> NDArray[np.uint8]:
    return np.asarray(skimage_data.astronaut(), np.uint8)


@pytest.fixture(scope="session")
def astronaut_png(astronaut: NDArray[np.uint8]) -> bytes:
    return encode_png(astronaut)


@pytest.fixture(scope="session")
def tshirt_png() -> bytes:
    return encode_png(draw_tshirt())


@pytest.fixture(scope="module")
def generator() -> Iterator[OfflineGenerator]:
    backend = OfflineGenerator()
    yield backend
    backend.close()


def image_request(
    model: bytes,
    garments: tuple[GarmentImage, ...],
    background: bytes | None = None,
    *,
    kind: JobKind = JobKind.IMAGE,
    **options: object,
) -> GenerationRequest:
    opts = {"width": 512, "height": 512, **options}
    return GenerationRequest(
        kind=kind,
        garments=garments,
        model_photo=model,
        background=background,
        options=GenerationOptions(**opts),  # type: ignore[arg-type]
    )


def top(data: bytes, side: GarmentSide = GarmentSide.FRONT) -> GarmentImage:
    return GarmentImage(data=data, category=GarmentCategory.TOP, side=side)


def near(pixels: NDArray[np.uint8], color: tuple[int, int, int], tolerance: float) -> NDArray[np.bool_]:
    diff = pixels.astype(np.float32) - np.array(color, np.float32)
    return np.linalg.norm(diff, axis=-1) < tolerance  # type: ignore[no-any-return]


class OverlapProbe:
    """Wraps a callable and records the most calls inside it at once (``most``). Each call
    waits, up to ``linger_s``, for another call to enter (a deadline wait on a condition): where
    nothing serialises the callers two of them are then inside together, where something does
    the wait runs out and the call goes on alone."""

    def __init__(self, inner: Callable[..., Any], linger_s: float = 0.3) -> None:
        self.inner = inner
        self.linger_s = linger_s
        self.active = 0
        self.most = 0
        self.calls = 0
        self._changed = threading.Condition()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._changed:
            self.active += 1
            self.calls += 1
            self.most = max(self.most, self.active)
            self._changed.notify_all()
            self._changed.wait_for(lambda: self.active > 1, timeout=self.linger_s)
        try:
            return self.inner(*args, **kwargs)
        finally:
            with self._changed:
                self.active -= 1

    def __getattr__(self, name: str) -> Any:  # the wrapped object's attributes (a model's config...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def run_concurrently(calls: list[Callable[[], Any]], timeout_s: float = 300) -> list[Any]:
    """Run ``calls`` in as many threads at once; their results in order (a call's exception is
    raised here)."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result(timeout=timeout_s) for future in futures]
