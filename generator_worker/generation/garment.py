"""Garment cut-out: separate a garment from its product-photo background, find its anchors.

A product photo either has an alpha channel (used as is) or a plain studio background, whose
colour is read from the border; a busy border falls back to GrabCut. The anchors are points of
the garment's silhouette (shoulders, hem corners, sleeve tips, waist, crotch) that the fitting
step pins to the body.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from generator_worker.generation import imaging
from generator_worker.generation.base import GarmentCategory, GarmentNotFoundError
from generator_worker.generation.cvcompat import cv2

FloatArray = NDArray[np.float32]
MAX_GARMENT_SIDE = 1024
BACKGROUND_DISTANCE = 22.0  # Lab distance from the studio colour that counts as garment
BUSY_BORDER_STD = 18.0
CACHE_SIZE = 8  # cut-outs kept, by garment bytes: a catalogue garment is tried on again and again


@dataclass(frozen=True)
class GarmentCutout:
    """The garment cropped to its silhouette: RGB, soft alpha (0..1) and named anchor points."""

    rgb: NDArray[np.uint8]
    alpha: FloatArray
    category: GarmentCategory
    anchors: dict[str, tuple[float, float]]

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


class CutoutCache:
    """The last ``CACHE_SIZE`` cut-outs by (garment image bytes, category): the same product
    photo is decoded and cut out once, not on every job (the arrays are read-only)."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[tuple[bytes, GarmentCategory], GarmentCutout] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, data: bytes, category: GarmentCategory) -> GarmentCutout:
        key = (data, category)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        cutout = cut_out(imaging.decode_image(data, what="garment image", keep_alpha=True), category)
        cutout.rgb.flags.writeable = False
        cutout.alpha.flags.writeable = False
        with self._lock:
            self._items[key] = cutout
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return cutout


def cut_out(image: NDArray[np.uint8], category: GarmentCategory) -> GarmentCutout:
    """Cut the garment out of a decoded RGB or RGBA product photo."""
    image = _limit_size(image)
    if image.shape[2] == 4 and float((image[..., 3] < 250).mean()) > 0.01:
        rgb = np.ascontiguousarray(image[..., :3])
        mask = (image[..., 3] >= 128).astype(np.uint8)
    else:
        rgb = np.ascontiguousarray(image[..., :3])
        mask = _bridge_stripes(_segment_studio_photo(rgb))
    mask = _clean(mask)
    area = int(mask.sum())
    if area < 0.02 * mask.size:
        raise GarmentNotFoundError("no garment found in the garment image")
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    mask = mask[y0:y1, x0:x1]
    rgb = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    rgb = _decontaminate(rgb, mask)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0)
    soft = np.where(mask > 0, np.maximum(soft, 0.5), soft * 0.9).astype(np.float32)
    anchors = find_anchors(mask, category)
    return GarmentCutout(rgb=rgb, alpha=soft, category=category, anchors=anchors)


def _decontaminate(rgb: NDArray[np.uint8], mask: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Replace the colours at and outside the silhouette's edge by nearby interior colours,
    so no studio-background fringe shows once the garment is warped and feathered."""
    interior = cv2.erode(mask, np.ones((5, 5), np.uint8))
    if not interior.any():
        return rgb
    # the fill is a blur (sigma 4 px): computed at a quarter of the resolution, then enlarged
    h, w = mask.shape
    small = (max(1, w // 4), max(1, h // 4))
    masked = cv2.bitwise_and(rgb, rgb, mask=interior)
    colour = cv2.resize(masked, small, interpolation=cv2.INTER_AREA).astype(np.float32)
    weight = cv2.resize(interior * np.uint8(255), small, interpolation=cv2.INTER_AREA).astype(np.float32)
    num = cv2.GaussianBlur(colour, (0, 0), 1.0)
    den = cv2.GaussianBlur(weight, (0, 0), 1.0)[..., None] * np.float32(1 / 255)
    fill = cv2.resize(np.clip(num / np.maximum(den, 1e-4), 0, 255).astype(np.uint8), (w, h))
    cv2.copyTo(rgb, interior, fill)
    return fill  # type: ignore[no-any-return]


def _limit_size(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    h, w = image.shape[:2]
    scale = MAX_GARMENT_SIDE / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)  # type: ignore[no-any-return]


def _segment_studio_photo(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    h, w = rgb.shape[:2]
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    band = max(2, round(0.02 * min(h, w)))
    border = np.concatenate(
        [
            lab[:band].reshape(-1, 3),
            lab[-band:].reshape(-1, 3),
            lab[:, :band].reshape(-1, 3),
            lab[:, -band:].reshape(-1, 3),
        ]
    ).astype(np.float32)
    if float(border.std(axis=0).max()) > BUSY_BORDER_STD:
        return _grabcut(rgb)
    studio = np.median(border, axis=0)
    # squared Lab distance to the studio colour, channel sums by a 1x3 transform (opencv loops)
    diff = cv2.subtract(lab.astype(np.float32), (*studio.tolist(), 0.0))
    squared = cv2.transform(cv2.multiply(diff, diff), np.ones((1, 3), np.float32))
    return (squared > BACKGROUND_DISTANCE**2).astype(np.uint8)  # type: ignore[no-any-return]


def _grabcut(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    h, w = rgb.shape[:2]
    scale = min(1.0, 320 / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))))
    sh, sw = small.shape[:2]
    mask = np.zeros((sh, sw), np.uint8)
    rect = (max(1, sw // 20), max(1, sh // 20), sw - 2 * max(1, sw // 20), sh - 2 * max(1, sh // 20))
    cv2.setRNGSeed(0)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), mask, rect, bgd, fgd, 4, cv2.GC_INIT_WITH_RECT)
    fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    return cv2.resize(fg, (w, h), interpolation=cv2.INTER_NEAREST)  # type: ignore[no-any-return]


STRIPE_GAP = 0.03  # of the garment's longer side: how far above and below a stripe to look


def _bridge_stripes(mask: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Horizontal stripes of the studio's colour (white stripes on a white backdrop) cut the
    garment into bands: a background pixel with garment both above and below it, each within
    ``STRIPE_GAP``, is garment. The neckline, the armpits and the gap between trouser legs
    stay open: they reach the photo's edge upwards or downwards. (Vertical stripes are not
    bridged: across, the gap between trouser legs looks the same.)"""
    gap = max(3, round(STRIPE_GAP * max(mask.shape)))
    line = np.ones((gap + 1, 1), np.uint8)
    above = cv2.dilate(mask, line, anchor=(0, gap))
    below = cv2.dilate(mask, line, anchor=(0, 0))
    return mask | (above & below)  # type: ignore[no-any-return]


def _clean(mask: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Open/close, keep the large components, fill holes (prints and logos stay garment)."""
    k = max(3, round(0.006 * max(mask.shape)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return np.zeros_like(mask)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= 0.15 * areas.max()) + 1
    mask = np.isin(labels, keep).astype(np.uint8)
    # fill holes: background is what the border reaches
    padded = np.pad(mask, 1)
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((flood.shape[0] + 2, flood.shape[1] + 2), np.uint8), (0, 0), 1)
    holes = (flood == 0)[1:-1, 1:-1]
    return (mask | holes).astype(np.uint8)


# --- anchors ---------------------------------------------------------------------------------


def _row_extent(mask: NDArray[np.uint8], y0: int, y1: int) -> tuple[float, float]:
    cols = np.flatnonzero(mask[max(0, y0) : max(y0 + 1, y1)].any(axis=0))
    return float(cols.min()), float(cols.max())


def _top_edge(mask: NDArray[np.uint8], x: float) -> float:
    """The first garment row in column ``x``, clamped into the mask (an anchor's column is
    offset inwards from an extreme that may sit at the mask's edge)."""
    column = min(max(round(x), 0), mask.shape[1] - 1)
    rows = np.flatnonzero(mask[:, column])
    return float(rows.min()) if rows.size else 0.0


def find_anchors(mask: NDArray[np.uint8], category: GarmentCategory) -> dict[str, tuple[float, float]]:
    """Named silhouette points of a cropped garment mask (left/right as seen in the image)."""
    h, w = mask.shape
    band = max(1, round(0.04 * h))
    hem_l, hem_r = _row_extent(mask, h - band, h)
    anchors: dict[str, tuple[float, float]] = {}
    if category is GarmentCategory.BOTTOM:
        waist_l, waist_r = _row_extent(mask, 0, band)
        anchors["waist_l"] = (waist_l, _top_edge(mask, waist_l + 0.02 * w))
        anchors["waist_r"] = (waist_r, _top_edge(mask, waist_r - 0.02 * w))
        anchors["hem_l"] = (hem_l, h - 1.0)
        anchors["hem_r"] = (hem_r, h - 1.0)
        center = round((hem_l + hem_r) / 2)
        column = mask[:, center]
        gap = np.flatnonzero(column == 0)
        gap = gap[gap > h * 0.2]
        if gap.size and (h - 1) in gap:
            crotch_y = float(gap.min())
            anchors["crotch"] = (float(center), crotch_y)
            row = mask[h - 1 - band // 2]
            inner_l = np.flatnonzero(row[:center])
            inner_r = np.flatnonzero(row[center:])
            if inner_l.size and inner_r.size:
                anchors["hem_inner_l"] = (float(inner_l.max()), h - 1.0)
                anchors["hem_inner_r"] = (float(inner_r.min() + center), h - 1.0)
        return anchors
    # top, dress, outer: the torso is the column range of the hem
    torso_w = max(1.0, hem_r - hem_l)
    upper = mask[: max(1, h // 2)]
    cols = np.flatnonzero(upper.any(axis=0))
    left_most, right_most = float(cols.min()), float(cols.max())
    has_sleeves = (hem_l - left_most) > 0.12 * torso_w and (right_most - hem_r) > 0.12 * torso_w
    if has_sleeves:
        # the torso side is where the sleeve joins; shoulders sit above the armpits
        shoulder_l = hem_l
        shoulder_r = hem_r
    else:
        # sleeveless: the shoulders (or straps) are the top edge's ends; the widest point of
        # the upper half is the armpit, which gives the garment's chest width
        shoulder_l, shoulder_r = _row_extent(mask, 0, band)
        for side, x in (("l", left_most), ("r", right_most)):
            rows = np.flatnonzero(upper[:, round(x)])
            anchors[f"armpit_{side}"] = (x, float(rows.mean()) if rows.size else 0.0)
    anchors["shoulder_l"] = (shoulder_l, _top_edge(mask, shoulder_l + 0.04 * torso_w))
    anchors["shoulder_r"] = (shoulder_r, _top_edge(mask, shoulder_r - 0.04 * torso_w))
    neck_x = (hem_l + hem_r) / 2
    anchors["neck"] = (neck_x, _top_edge(mask, neck_x))
    anchors["hem_l"] = (hem_l, h - 1.0)
    anchors["hem_r"] = (hem_r, h - 1.0)
    side_y = round(anchors["shoulder_l"][1] + 0.6 * (h - 1 - anchors["shoulder_l"][1]))
    side_cols = np.flatnonzero(mask[min(h - 1, side_y)])
    if side_cols.size and not has_sleeves:
        anchors["side_l"] = (float(side_cols.min()), float(side_y))
        anchors["side_r"] = (float(side_cols.max()), float(side_y))
    if has_sleeves:
        for side, x_tip, x_arm in (
            ("l", left_most, hem_l - 0.04 * torso_w),
            ("r", right_most, hem_r + 0.04 * torso_w),
        ):
            tip_cols = (
                slice(int(x_tip), int(x_tip) + 2)
                if side == "l"
                else slice(max(0, int(x_tip) - 1), int(x_tip) + 1)
            )
            tip_rows = np.flatnonzero(mask[: max(1, h * 3 // 4), tip_cols].any(axis=1))
            anchors[f"sleeve_{side}"] = (x_tip, float(tip_rows.mean()) if tip_rows.size else h / 4)
            arm_rows = np.flatnonzero(mask[:, round(x_arm)])
            if arm_rows.size:
                anchors[f"armpit_{side}"] = (
                    hem_l if side == "l" else hem_r,
                    float(arm_rows.max()),
                )
    return anchors
