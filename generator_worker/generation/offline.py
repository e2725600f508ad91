"""The offline try-on backend: mediapipe pose and mask, thin-plate-spline garment warp,
soft compositing. No weights, no downloads; about a tenth of a second per image on a CPU."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from numpy.typing import NDArray

from generator_worker.generation import composite, imaging
from generator_worker.generation.base import (
    BackendInfo,
    GarmentCategory,
    GarmentImage,
    GarmentSide,
    GeneratedOutput,
    GenerationRequest,
    GenerationResult,
    Generator,
    JobKind,
    PoseHint,
    ResourceError,
)
from generator_worker.generation.fit import FitStyle, fit_parts
from generator_worker.generation.garment import CutoutCache, GarmentCutout
from generator_worker.generation.pose import (
    MIN_VISIBILITY,
    SHOULDER_L,
    SHOULDER_R,
    Facing,
    PersonAnalysis,
    PersonAnalyzer,
    in_picture,
    protected_mask,
)
from generator_worker.generation.video import (
    LOOKBOOK_FPS,
    LOOKBOOK_SECONDS_PER_OUTPUT,
    encode_mp4,
    frame_count,
    lookbook_frames,
)
from generator_worker.generation.warp import warp_garment

ANALYSIS_MAX_SIDE = 1280
LAYER_ORDER = (
    GarmentCategory.BOTTOM,
    GarmentCategory.DRESS,
    GarmentCategory.TOP,
    GarmentCategory.OUTER,
)

OFFLINE_INFO = BackendInfo(
    name="offline",
    license="Apache-2.0 (mediapipe models and code), BSD/Apache-2.0 (OpenCV)",
    commercial_use=True,
    job_kinds=frozenset({JobKind.IMAGE, JobKind.VIDEO}),
    categories=frozenset(GarmentCategory),
    needs_background=False,
    min_size=(128, 128),
    max_size=(2048, 2048),
    max_garments=8,
    max_outputs=8,
    notes="Pose landmarks and person mask from mediapipe 0.10.21 (bundled models), garment "
    "warped with an OpenCV thin-plate spline; keeps face, hair and hands.",
)


class _Timer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000


class OfflineGenerator(Generator):
    info = OFFLINE_INFO

    def __init__(self) -> None:
        self._analyzer = PersonAnalyzer()
        self._cutouts = CutoutCache()
        self._backgrounds = imaging.BackgroundCache()

    def close(self) -> None:
        self._analyzer.close()

    def clear_caches(self) -> None:
        """Forget the cached garment cut-outs and backgrounds (benchmarks of a cold start)."""
        self._cutouts = CutoutCache()
        self._backgrounds = imaging.BackgroundCache()

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.validate(request)
        timer = _Timer()
        start = time.perf_counter()
        try:
            images = self._render(request, timer)
            outputs = self._encode(request, images, timer)
        except MemoryError as error:
            raise ResourceError("out of memory while generating") from error
        timer.ms["total"] = (time.perf_counter() - start) * 1000
        return GenerationResult(outputs=tuple(outputs), backend=self.info.name, timings_ms=timer.ms)

    # --- stages -------------------------------------------------------------------------------

    def _render(self, request: GenerationRequest, timer: _Timer) -> list[NDArray[np.uint8]]:
        options = request.options
        width, height = options.width, options.height
        with timer.stage("decode"):
            photo = imaging.decode_image(request.model_photo, what="model photo")
            photo = _limit(photo, ANALYSIS_MAX_SIDE)
            background = (
                self._backgrounds.get(request.background, width, height)
                if request.background is not None
                else None
            )
        with timer.stage("pose"):
            points, visibility = self._analyzer.landmarks(photo)
            visibility = in_picture(points, visibility, photo.shape[1], photo.shape[0])
        with timer.stage("segment"):
            # the whole photo, before framing: the model sees the person with what they hold
            photo_mask = self._analyzer.segment(photo)
        with timer.stage("crop"):
            box = frame_box(points, visibility, photo_mask, width, height)
            x0, y0, cw, ch = box
            person_rgb = imaging.resize_to(photo[y0 : y0 + ch, x0 : x0 + cw], width, height)
            person_rgb = np.ascontiguousarray(person_rgb)
            facing = _facing(request.pose_hint, points)
            person = PersonAnalysis(
                landmarks=points, visibility=visibility, mask=photo_mask, facing=facing
            ).cropped(x0, y0, cw, ch, width, height)
        with timer.stage("garment"):
            cutouts = [
                self._cutouts.get(g.data, g.category) for g in _pick_garments(request.garments, facing)
            ]
        with timer.stage("composite"):
            protect = protected_mask(person)
            shade = composite.shading(person_rgb, sigma=0.004 * max(width, height))  # type: ignore[arg-type]
        images = []
        for index in range(options.num_outputs):
            rng = np.random.default_rng([options.seed, index])
            style = FitStyle.from_rng(rng)
            images.append(
                self._compose(person, person_rgb, background, cutouts, protect, shade, style, timer)  # type: ignore[arg-type]
            )
        return images

    def _compose(
        self,
        person: PersonAnalysis,
        person_rgb: NDArray[np.uint8],
        background: NDArray[np.uint8] | None,
        cutouts: list[GarmentCutout],
        protect: NDArray[np.float32],
        shade: NDArray[np.float32],
        style: FitStyle,
        timer: _Timer,
    ) -> NDArray[np.uint8]:
        height, width = person_rgb.shape[:2]
        canvas = person_rgb.astype(np.float32)
        garments_alpha = np.zeros((height, width), np.float32)
        edge = max(0.8, 0.0015 * max(width, height))
        for cutout in cutouts:
            with timer.stage("warp"):
                parts = fit_parts(cutout, person, style)
            for part in parts:
                with timer.stage("warp"):
                    rgb, alpha, (x0, y0, bw, bh) = warp_garment(
                        cutout.rgb,
                        part.alpha,
                        part.garment_points,
                        part.canvas_points,
                        width,
                        height,
                    )
                with timer.stage("composite"):
                    alpha = composite.feather(alpha, edge)
                    alpha *= 1.0 - protect[y0 : y0 + bh, x0 : x0 + bw]
                    composite.layer_over(canvas, rgb, alpha, shade, (x0, y0))
                    covered = garments_alpha[y0 : y0 + bh, x0 : x0 + bw]
                    np.maximum(covered, alpha, out=covered)
        with timer.stage("composite"):
            if background is not None:
                matte = composite.feather(np.maximum(composite.keep_matte(person.mask), garments_alpha), edge)
                return composite.over_background(composite.to_uint8(canvas), matte, background)
            return composite.to_uint8(canvas)

    def _encode(
        self, request: GenerationRequest, images: list[NDArray[np.uint8]], timer: _Timer
    ) -> list[GeneratedOutput]:
        options = request.options
        if request.kind is JobKind.VIDEO:
            fps = options.fps if options.fps is not None else LOOKBOOK_FPS
            seconds = options.seconds_per_output
            seconds = seconds if seconds is not None else LOOKBOOK_SECONDS_PER_OUTPUT
            with timer.stage("video"):
                data, frames = encode_mp4(
                    lookbook_frames(images, fps, seconds), options.width, options.height, fps
                )
            assert frames == frame_count(len(images), fps, seconds)
            return [GeneratedOutput(data, "video/mp4", options.width, options.height, frames, fps=fps)]
        outputs = []
        with timer.stage("encode"):
            for image in images:
                data, media_type = imaging.encode_image(image, options.image_format, options.jpeg_quality)
                outputs.append(GeneratedOutput(data, media_type, options.width, options.height))
        return outputs


def _limit(image: NDArray[np.uint8], max_side: int) -> NDArray[np.uint8]:
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    return imaging.resize_to(image, round(w * scale), round(h * scale))  # type: ignore[return-value]


FRAME_MARGIN = 0.04  # of the frame's height, kept above the person's head when cropping


def frame_box(
    points: NDArray[np.float32],
    visibility: NDArray[np.float32],
    mask: NDArray[np.float32],
    width: int,
    height: int,
) -> tuple[int, int, int, int]:
    """The part of the photo shown in the width x height output: (x0, y0, w, h).

    The frame has the output's aspect and is as large as the photo allows (the photo is never
    padded or stretched). It is placed around the person: the box of their mask (what they
    hold included) and of their seen landmarks. Along an axis where that box fits, the frame is
    centred on it; where it does not, the frame is centred on the shoulders across, and starts
    just above the head downwards, so the head and torso stay in the picture.
    """
    h, w = mask.shape
    crop_w, crop_h = imaging.cover_box(w, h, width, height)[2:]
    seen = points[visibility >= MIN_VISIBILITY]
    step = 4  # the mask's box at a quarter resolution is precise enough for framing
    rows = np.flatnonzero((mask[::step, ::step] >= 0.5).any(axis=1)) * step
    cols = np.flatnonzero((mask[::step, ::step] >= 0.5).any(axis=0)) * step
    xs = np.concatenate([seen[:, 0], cols[[0, -1]] if cols.size else np.empty(0)])
    ys = np.concatenate([seen[:, 1], rows[[0, -1]] if rows.size else np.empty(0)])
    left, right = float(xs.min()), float(xs.max())
    top, bottom = float(ys.min()), float(ys.max())
    shoulders_x = float(points[[SHOULDER_L, SHOULDER_R], 0].mean())
    cx = (left + right) / 2 if right - left <= crop_w else shoulders_x
    cy = (top + bottom) / 2 if bottom - top <= crop_h else top - FRAME_MARGIN * crop_h + crop_h / 2
    return imaging.cover_box(w, h, width, height, (cx, cy))


def _facing(hint: PoseHint, points: NDArray[np.float32]) -> Facing:
    if hint is PoseHint.FRONT:
        return Facing.FRONT
    if hint is PoseHint.BACK:
        return Facing.BACK
    return Facing.FRONT if points[11, 0] > points[12, 0] else Facing.BACK


def _pick_garments(garments: tuple[GarmentImage, ...], facing: Facing) -> list[GarmentImage]:
    """One image per category, the side matching the person's facing when there is one,
    layered bottoms first and outerwear last."""
    wanted = GarmentSide.FRONT if facing is Facing.FRONT else GarmentSide.BACK
    chosen: dict[GarmentCategory, GarmentImage] = {}
    for garment in garments:
        current = chosen.get(garment.category)
        if current is None or (current.side is not wanted and garment.side is wanted):
            chosen[garment.category] = garment
    return [chosen[c] for c in LAYER_ORDER if c in chosen]
