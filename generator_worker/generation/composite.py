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
    a = cv2.merge([alpha, alpha, alpha])
    layer = rgb.astype(np.float32)
    if shade is not None:
        cv2.multiply(layer, cv2.merge([shade[y0 : y0 + h, x0 : x0 + w]] * 3), dst=layer)
    region = base[y0 : y0 + h, x0 : x0 + w]
    # region += (layer - region) * alpha, in place
    cv2.subtract(layer, region, dst=layer)
    cv2.multiply(layer, a, dst=layer)
    cv2.add(region, layer, dst=region)
    return base


def feather(alpha: FloatArray, sigma: float) -> FloatArray:
    """Soften a matte's edge without eating into its interior."""
    blurred = cv2.GaussianBlur(alpha, (0, 0), sigma)
    return cv2.addWeighted(alpha, 0.5, blurred, 0.5, 0.0)  # type: ignore[no-any-return]


MATTE_FULL = 0.4  # person-mask value from which a pixel is kept whole over a new background


def keep_matte(mask: FloatArray) -> FloatArray:
    """What of the photo is kept over a new background: the person mask, generous so that the
    less certain parts of the person (held objects, loose hair, dark clothes) are kept whole
    rather than half dissolved into the new background."""
    return np.minimum(mask * np.float32(1.0 / MATTE_FULL), np.float32(1.0))


def over_background(
    foreground: NDArray[np.uint8], matte: FloatArray, background: NDArray[np.uint8]
) -> NDArray[np.uint8]:
    """The foreground (person and garments) with its matte over a background of equal size."""
    return cv2.blendLinear(foreground, background, matte, 1.0 - matte)  # type: ignore[no-any-return]


def to_uint8(image: FloatArray) -> NDArray[np.uint8]:
    """Rounded and clipped to 0..255 (the values are never negative)."""
    return cv2.convertScaleAbs(image)  # type: ignore[no-any-return]
