"""Compositing: garments over the person with soft edges, the person over a background."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from generator_worker.generation.cvcompat import cv2

FloatArray = NDArray[np.float32]


def shading(person_rgb: NDArray[np.uint8], sigma: float) -> FloatArray:
    """Relative luminance of the person's photo (folds, shadows), around 1.0, for the garment."""
    h, w = person_rgb.shape[:2]
    small = cv2.resize(person_rgb, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) + 8.0
    s = max(0.5, sigma / 4)
    ratio = cv2.GaussianBlur(gray, (0, 0), s) / cv2.GaussianBlur(gray, (0, 0), s * 6)
    ratio = np.clip(1.0 + 0.5 * (ratio - 1.0), 0.85, 1.12).astype(np.float32)
    return cv2.resize(ratio, (w, h), interpolation=cv2.INTER_LINEAR)  # type: ignore[no-any-return]


def layer_over(
    base: FloatArray,
    rgb: NDArray[np.uint8],
    alpha: FloatArray,
    shade: FloatArray | None,
    origin: tuple[int, int] = (0, 0),
) -> FloatArray:
    """Composite an RGB layer with a soft alpha, placed at ``origin`` (x, y), over a float RGB
    base (in place; returned)."""
    x0, y0 = origin
    h, w = alpha.shape
    a = alpha[..., None]
    layer = rgb.astype(np.float32)
    if shade is not None:
        layer *= shade[y0 : y0 + h, x0 : x0 + w, None]
    region = base[y0 : y0 + h, x0 : x0 + w]
    region -= region * a
    region += layer * a
    return base


def feather(alpha: FloatArray, sigma: float) -> FloatArray:
    """Soften a matte's edge without eating into its interior."""
    blurred = cv2.GaussianBlur(alpha, (0, 0), sigma)
    return np.clip(0.5 * alpha + 0.5 * blurred, 0.0, 1.0).astype(np.float32)


def over_background(foreground: FloatArray, matte: FloatArray, background: NDArray[np.uint8]) -> FloatArray:
    """The foreground (person and garments) with its matte over a background of equal size."""
    m = matte[..., None]
    blended = foreground * m + background.astype(np.float32) * (1.0 - m)
    return np.asarray(blended, dtype=np.float32)


def to_uint8(image: FloatArray) -> NDArray[np.uint8]:
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)
