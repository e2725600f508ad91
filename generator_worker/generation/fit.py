"""Fitting: where each garment anchor lands on the body, per garment category.

The body frame runs from the shoulders' midpoint down the torso axis (towards the hips), with
an across axis to the image's right. Garment anchors are first placed by a similarity (the
garment scaled so its shoulders, or waist, match the body's), then pinned: shoulders to the
shoulders, sides and hem to the torso's width at their depth, sleeves along the arms, trouser
legs along the legs. The thin-plate spline interpolates between the pins.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from generator_worker.generation import pose as lm
from generator_worker.generation.base import GarmentCategory
from generator_worker.generation.garment import GarmentCutout
from generator_worker.generation.pose import PersonAnalysis

Point = NDArray[np.float64]


@dataclass(frozen=True)
class FitStyle:
    """Small seeded variations between outputs: ease (looseness) and length factors."""

    ease: float = 1.0
    length: float = 1.0

    @classmethod
    def from_rng(cls, rng: np.random.Generator) -> FitStyle:
        return cls(ease=float(rng.uniform(0.98, 1.08)), length=float(rng.uniform(0.96, 1.04)))


def _walk(polyline: list[Point], length: float) -> tuple[Point, Point]:
    """The point ``length`` along a polyline (extrapolating past its end) and its direction."""
    remaining = max(length, 0.0)
    for a, b in itertools.pairwise(polyline):
        seg = b - a
        seg_len = float(np.linalg.norm(seg))
        if seg_len < 1e-6:
            continue
        direction = seg / seg_len
        if remaining <= seg_len or b is polyline[-1]:
            return a + direction * remaining, direction
        remaining -= seg_len
    return polyline[-1], np.array([0.0, 1.0])


# Body proportions in shoulder spans (the distance between the two shoulder landmarks), used
# for what the photo does not show: a waist-up portrait has no hips, a cropped or
# low-confidence arm has no elbow or wrist.
TORSO_PER_SPAN = 1.4  # shoulders' midpoint to hips' midpoint
HIP_SPAN_PER_SPAN = 0.62  # between the hip joints
UPPER_ARM_PER_SPAN = 0.85  # shoulder to elbow
FOREARM_PER_SPAN = 0.75  # elbow to wrist
LEG_PER_TORSO = 0.9  # hip to knee and knee to ankle, in torso lengths
ARM_HANG_DEG = 12.0  # an unseen arm hangs this far out from the torso's axis
MASK_WIDTH_RANGE = (0.85, 1.3)  # the person mask may narrow or widen the torso this much
MASK_DEPTHS = (0.15, 0.35, 0.55, 0.75, 0.95)  # where the mask's width is read, in torso lengths


def _rotate(v: Point, degrees: float) -> Point:
    t = np.radians(degrees)
    c, s = float(np.cos(t)), float(np.sin(t))
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _unit(v: Point) -> Point:
    return v / max(float(np.linalg.norm(v)), 1e-6)


class BodyFrame:
    """The torso's frame and the limbs' polylines, from the landmarks that were seen and body
    proportions for the rest.

    The shoulders are always seen (the analysis refuses a photo without them). The torso runs
    to the hips' midpoint when both hips are seen; otherwise it runs perpendicular to the
    shoulder line, ``TORSO_PER_SPAN`` shoulder spans long, and the hips are placed there. An
    unseen elbow hangs the upper arm ``ARM_HANG_DEG`` out from the torso axis, an unseen wrist
    continues the upper arm; unseen knees and ankles continue the torso axis downwards.
    """

    def __init__(self, person: PersonAnalysis) -> None:
        p = person.landmarks.astype(np.float64)
        vis = person.visibility
        # image-left / image-right sides, whichever way the person faces
        if p[lm.SHOULDER_L, 0] <= p[lm.SHOULDER_R, 0]:
            self.sides = {"l": "L", "r": "R"}
        else:
            self.sides = {"l": "R", "r": "L"}
        idx = {
            "L": (lm.SHOULDER_L, lm.ELBOW_L, lm.WRIST_L, lm.HIP_L, lm.KNEE_L, lm.ANKLE_L),
            "R": (lm.SHOULDER_R, lm.ELBOW_R, lm.WRIST_R, lm.HIP_R, lm.KNEE_R, lm.ANKLE_R),
        }
        ids = {side: idx[self.sides[side]] for side in ("l", "r")}
        shoulder_l, shoulder_r = p[ids["l"][0]], p[ids["r"][0]]
        self.origin = (shoulder_l + shoulder_r) / 2
        self.shoulder_span = max(float(np.linalg.norm(shoulder_r - shoulder_l)), 1.0)
        span = self.shoulder_span
        self.hips_seen = lm.reliable(vis, ids["l"][3], ids["r"][3])
        if self.hips_seen:
            hip_l, hip_r = p[ids["l"][3]], p[ids["r"][3]]
            axis = (hip_l + hip_r) / 2 - self.origin
            self.torso_len = max(float(np.linalg.norm(axis)), 0.6 * span)
            self.down = _unit(axis)
        else:
            across = _unit(shoulder_r - shoulder_l)
            self.down = np.array([-across[1], across[0]])
            if self.down[1] < 0:  # upside down shoulders: the torso still hangs below them
                self.down = -self.down
            self.torso_len = TORSO_PER_SPAN * span
        self.across = np.array([self.down[1], -self.down[0]])
        if not self.hips_seen:
            hip_mid = self.origin + self.torso_len * self.down
            hip_l = hip_mid - 0.5 * HIP_SPAN_PER_SPAN * span * self.across
            hip_r = hip_mid + 0.5 * HIP_SPAN_PER_SPAN * span * self.across
        self.shoulder_half = 0.56 * span
        hip_span = float(np.linalg.norm(hip_r - hip_l))
        self.hip_half = max(0.75 * hip_span, 0.4 * span)
        self.joints: dict[str, list[Point]] = {}
        for side, shoulder, hip, sign in (("l", shoulder_l, hip_l, -1.0), ("r", shoulder_r, hip_r, 1.0)):
            _, elbow_i, wrist_i, _, knee_i, ankle_i = ids[side]
            if lm.reliable(vis, elbow_i):
                elbow = p[elbow_i]
            else:  # hangs beside the torso, turned outwards
                elbow = shoulder + UPPER_ARM_PER_SPAN * span * _rotate(self.down, -sign * ARM_HANG_DEG)
            if lm.reliable(vis, wrist_i):
                wrist = p[wrist_i]
            else:
                wrist = elbow + FOREARM_PER_SPAN * span * _unit(elbow - shoulder)
            leg = LEG_PER_TORSO * self.torso_len
            knee = p[knee_i] if lm.reliable(vis, knee_i) else hip + leg * self.down
            ankle = p[ankle_i] if lm.reliable(vis, ankle_i) else knee + leg * _unit(knee - hip)
            self.joints[side] = [shoulder, elbow, wrist, hip, knee, ankle]

        self._mask_widths = self._measure_widths(person.mask)

    def at(self, depth: float, offset: float) -> Point:
        return self.origin + depth * self.down + offset * self.across

    def model_half_width(self, depth: float) -> float:
        t = float(np.clip(depth / self.torso_len, 0.0, 1.0))
        return (1 - t) * self.shoulder_half + t * self.hip_half

    def half_width(self, depth: float, sign: float = 1.0) -> float:
        """Half the torso's width at ``depth`` on one side (sign -1: image-left, +1: right):
        the proportions' width, narrowed or widened within ``MASK_WIDTH_RANGE`` to where the
        person mask ends (the mask often includes hanging arms, hence the cap)."""
        model = self.model_half_width(depth)
        side = self._mask_widths[0 if sign < 0 else 1]
        depths = np.array(MASK_DEPTHS) * self.torso_len
        measured = float(np.interp(depth, depths, side))
        low, high = MASK_WIDTH_RANGE
        return float(np.clip(measured, low * model, high * model))

    def _measure_widths(self, mask: NDArray[np.float32]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """For each of ``MASK_DEPTHS``, how far from the axis the person mask reaches on each
        side (outside the picture the person is assumed to continue)."""
        h, w = mask.shape
        step = max(1.0, self.shoulder_span / 48)
        offsets = np.arange(0.0, 1.6 * self.shoulder_span, step)
        depths = np.array(MASK_DEPTHS) * self.torso_len
        result = []
        for sign in (-1.0, 1.0):
            pts = (
                self.origin[None, None, :]
                + depths[:, None, None] * self.down[None, None, :]
                + sign * offsets[None, :, None] * self.across[None, None, :]
            )
            xs = np.round(pts[..., 0]).astype(np.int64)
            ys = np.round(pts[..., 1]).astype(np.int64)
            inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
            values = np.ones(xs.shape, np.float32)
            values[inside] = mask[ys[inside], xs[inside]]
            person = values >= 0.5
            # the first sample off the person, per depth (the whole line when it never leaves)
            first_off = np.where(person.all(axis=1), len(offsets), np.argmin(person, axis=1))
            result.append(np.asarray(first_off, np.float64) * step)
        return result[0], result[1]

    def arm(self, side: str) -> list[Point]:
        return self.joints[side][0:3]

    def leg(self, side: str) -> list[Point]:
        return self.joints[side][3:6]


@dataclass(frozen=True)
class PartFit:
    """One rigidly or smoothly warped piece of a garment: its alpha in garment coordinates
    and matching (garment points, canvas points), (N, 2) float32 arrays."""

    name: str
    alpha: NDArray[np.float32]
    garment_points: NDArray[np.float32]
    canvas_points: NDArray[np.float32]


def fit_parts(garment: GarmentCutout, person: PersonAnalysis, style: FitStyle = FitStyle()) -> list[PartFit]:
    """The garment's pieces in drawing order, each with its point correspondences.

    Sleeves are separate pieces turned about the shoulder joint onto the arm: a flat-laid
    sleeve points sideways while an arm usually hangs down, which a single smooth warp of
    the whole garment could only reach by folding it over itself.
    """
    body = BodyFrame(person)
    a = {name: np.array(xy, np.float64) for name, xy in garment.anchors.items()}
    if garment.category is GarmentCategory.BOTTOM:
        return [_part("body", garment.alpha, _fit_bottom(a, body, style))]
    pairs, scale = _fit_upper(a, body, style, garment.category)
    if "sleeve_l" not in a or "sleeve_r" not in a:
        return [_part("body", garment.alpha, pairs)]
    w = garment.alpha.shape[1]
    xs = np.arange(w, dtype=np.float32)
    overlap = max(2.0, 0.01 * w)
    left_edge, right_edge = float(a["hem_l"][0]), float(a["hem_r"][0])
    torso_cols = np.clip(np.minimum(xs - left_edge, right_edge - xs) / overlap + 1, 0, 1)
    parts = [_part("body", garment.alpha * torso_cols[None, :], pairs)]
    for side in ("l", "r"):
        cols = (xs < left_edge + overlap) if side == "l" else (xs > right_edge - overlap)
        sleeve_alpha = garment.alpha * cols[None, :].astype(np.float32)
        shoulder = pairs[0][1] if side == "l" else pairs[1][1]
        parts.append(_part(f"sleeve_{side}", sleeve_alpha, _fit_sleeve(a, body, side, scale, shoulder)))
    return parts


def _part(name: str, alpha: NDArray[np.float32], pairs: list[tuple[Point, Point]]) -> PartFit:
    src = np.array([s for s, _ in pairs], np.float32)
    dst = np.array([d for _, d in pairs], np.float32)
    src, dst = _dedupe(src, dst)
    return PartFit(name, alpha.astype(np.float32), src, dst)


def _fit_sleeve(
    a: dict[str, Point], body: BodyFrame, side: str, scale: float, shoulder: Point
) -> list[tuple[Point, Point]]:
    """A similarity (three point pairs) turning the sleeve about its root onto the arm, at the
    garment's scale.

    The sleeve's root is the middle of the seam from the shoulder anchor to the armpit; it is
    hung just below ``shoulder`` (the garment's shoulder point on the body, outside the shoulder
    joint) and its axis, root to tip, is turned along the arm, so the sleeve lies on the upper
    arm beside the torso, its seam side outwards and its armpit side towards the torso.
    """
    top = a[f"shoulder_{side}"]
    tip = a[f"sleeve_{side}"]
    pit = a.get(f"armpit_{side}", top + np.array([0.0, 0.5 * float(np.linalg.norm(tip - top))]))
    root = (top + pit) / 2
    arm = body.arm(side)
    root_width = float(np.linalg.norm(pit - top)) * scale
    length = float(np.linalg.norm(tip - root)) * scale
    start = shoulder + body.down * 0.25 * root_width
    arm_point, _ = _walk([start, *arm[1:]], length)
    direction = arm_point - start
    if float(np.linalg.norm(direction)) < 1e-6:  # degenerate arm: keep the sleeve's direction
        direction = (tip - root) * scale
    direction = _unit(direction) * length
    axis_g = tip - root
    perp_g = np.array([-axis_g[1], axis_g[0]])
    perp_b = np.array([-direction[1], direction[0]])
    return [(root, start), (tip, start + direction), (root + perp_g, start + perp_b)]


def _fit_upper(
    a: dict[str, Point], body: BodyFrame, style: FitStyle, category: GarmentCategory
) -> tuple[list[tuple[Point, Point]], float]:
    ease = style.ease * (1.06 if category is GarmentCategory.OUTER else 1.0)
    g_origin = (a["shoulder_l"] + a["shoulder_r"]) / 2
    # the garment's chest width matches the body's shoulder width: the shoulder points of a
    # sleeved garment (where the sleeves join), the armpits of a sleeveless one (whose top
    # edge, straps or neckline, is narrower than the body)
    sleeved = "sleeve_l" in a or "armpit_l" not in a
    chest = ("shoulder_l", "shoulder_r") if sleeved else ("armpit_l", "armpit_r")
    g_span = max(float(a[chest[1]][0] - a[chest[0]][0]), 1.0)
    scale = 2 * body.shoulder_half * ease / g_span
    lift = -0.06 * body.shoulder_span

    def depth(p: Point, stretch: float = 1.0) -> float:
        return float(p[1] - g_origin[1]) * scale * stretch + lift

    def offset(p: Point) -> float:
        return float(p[0] - g_origin[0]) * scale

    flares = category in (GarmentCategory.DRESS, GarmentCategory.OUTER)
    # sleeved: the shoulder points sit on the body's shoulders; sleeveless: the straps keep
    # their place on the garment
    shoulder_l = -body.shoulder_half * ease if sleeved else offset(a["shoulder_l"])
    shoulder_r = body.shoulder_half * ease if sleeved else offset(a["shoulder_r"])
    pairs: list[tuple[Point, Point]] = [
        (a["shoulder_l"], body.at(lift, shoulder_l)),
        (a["shoulder_r"], body.at(lift, shoulder_r)),
        (a["neck"], body.at(depth(a["neck"]), offset(a["neck"]))),
    ]
    for side, sign in (("l", -1.0), ("r", 1.0)):
        for name in (f"hem_{side}", f"side_{side}", f"armpit_{side}"):
            if name not in a:
                continue
            d = depth(a[name], style.length if name.startswith("hem") else 1.0)
            body_half = body.half_width(d, sign) * ease * 1.04
            own_half = abs(offset(a[name]))
            half = max(body_half, own_half) if flares else max(body_half, 0.5 * (body_half + own_half))
            pairs.append((a[name], body.at(d, sign * half)))
    return pairs, scale


def _fit_bottom(a: dict[str, Point], body: BodyFrame, style: FitStyle) -> list[tuple[Point, Point]]:
    ease = style.ease
    waist_half = body.hip_half * 0.95 * ease
    g_origin = (a["waist_l"] + a["waist_r"]) / 2
    g_span = max(float(a["waist_r"][0] - a["waist_l"][0]), 1.0)
    scale = 2 * waist_half / g_span
    waist_depth = body.torso_len * 0.85

    def depth(p: Point, stretch: float = 1.0) -> float:
        return float(p[1] - g_origin[1]) * scale * stretch + waist_depth

    pairs: list[tuple[Point, Point]] = [
        (a["waist_l"], body.at(waist_depth, -waist_half)),
        (a["waist_r"], body.at(waist_depth, waist_half)),
    ]
    if "crotch" in a:
        pairs.append((a["crotch"], body.at(depth(a["crotch"]), 0.0)))
    if "hem_inner_l" in a and "hem_inner_r" in a:  # trousers: each leg along the body's leg
        for side, outer, inner in (("l", "hem_l", "hem_inner_l"), ("r", "hem_r", "hem_inner_r")):
            leg_len = float(a[outer][1] - g_origin[1]) * scale * style.length
            start = body.leg(side)[0].copy()
            start = start + (waist_depth - float(np.dot(start - body.origin, body.down))) * body.down
            point, direction = _walk([start, *body.leg(side)[1:]], leg_len)
            across = np.array([direction[1], -direction[0]])
            half = abs(float(a[inner][0] - a[outer][0])) * scale / 2
            centre = point
            sign = -1.0 if side == "l" else 1.0
            pairs.append((a[outer], centre + sign * half * across))
            pairs.append((a[inner], centre - sign * half * across))
    else:  # skirt
        for side, sign in (("l", -1.0), ("r", 1.0)):
            p = a[f"hem_{side}"]
            d = depth(p, style.length)
            half = max(body.hip_half * ease, abs(float(p[0] - g_origin[0])) * scale)
            pairs.append((p, body.at(d, sign * half)))
    return pairs


def _dedupe(
    src: NDArray[np.float32], dst: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Drop pins that coincide with an earlier one (the spline's system would be singular)."""
    keep: list[int] = []
    for i in range(len(src)):
        if all(np.linalg.norm(src[i] - src[j]) > 2 and np.linalg.norm(dst[i] - dst[j]) > 2 for j in keep):
            keep.append(i)
    return src[keep], dst[keep]
