"""Lookbook clips: the try-on outputs in sequence, with a slow zoom and pan and crossfades,
encoded as H.264 MP4 through PyAV (whose wheel ships ffmpeg and libx264)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

from generator_worker.generation.cvcompat import cv2

ZOOM = 0.08  # how far the camera pushes in over one output
FADE_SECONDS = 0.4
LOOKBOOK_FPS = 24  # the lookbook clip's rate and length per output when a job sets neither
LOOKBOOK_SECONDS_PER_OUTPUT = 2.0


def frame_count(outputs: int, fps: int, seconds_per_output: float) -> int:
    return outputs * max(1, round(fps * seconds_per_output))


def _camera(image: NDArray[np.uint8], progress: float, index: int) -> NDArray[np.uint8]:
    """The image seen by a camera that pushes in (even outputs) or pulls out (odd outputs)."""
    h, w = image.shape[:2]
    t = progress if index % 2 == 0 else 1.0 - progress
    ease = t * t * (3 - 2 * t)
    scale = 1.0 + ZOOM * ease
    # aim a little above the centre (the garment and the face), drifting sideways
    cx = w / 2 + (0.02 * w) * (ease - 0.5) * (1 if index % 2 == 0 else -1)
    cy = h * 0.45
    matrix = np.array([[scale, 0, (1 - scale) * cx], [0, scale, (1 - scale) * cy]], np.float32)
    return cv2.warpAffine(
        image,
        matrix,
        (w, h),
        flags=cv2.INTER_LINEAR,  # type: ignore[no-any-return]
        borderMode=cv2.BORDER_REFLECT,
    )


def lookbook_frames(
    images: Sequence[NDArray[np.uint8]], fps: int, seconds_per_output: float
) -> Iterator[NDArray[np.uint8]]:
    per_output = max(1, round(fps * seconds_per_output))
    fade = min(per_output // 2, max(1, round(fps * FADE_SECONDS))) if len(images) > 1 else 0
    for index, image in enumerate(images):
        for k in range(per_output):
            frame = _camera(image, k / max(1, per_output - 1), index)
            remaining = per_output - k
            if index + 1 < len(images) and fade and remaining <= fade:
                weight = 1.0 - (remaining - 1) / fade
                following = _camera(images[index + 1], 0.0, index + 1)
                frame = cv2.addWeighted(frame, 1.0 - weight, following, weight, 0.0)
            yield frame


def encode_mp4(
    frames: Iterator[NDArray[np.uint8]], width: int, height: int, fps: int, crf: int = 23
) -> tuple[bytes, int]:
    """Encode RGB frames as H.264 (yuv420p, faststart) MP4; returns (bytes, frame count)."""
    count = 0
    # faststart (the index first, for streaming playback) needs a second pass over a real file
    with tempfile.TemporaryDirectory(prefix="vto-video-") as folder:
        path = Path(folder) / "clip.mp4"
        count = _write(path, frames, width, height, fps, crf)
        return path.read_bytes(), count


def _write(
    path: Path, frames: Iterator[NDArray[np.uint8]], width: int, height: int, fps: int, crf: int
) -> int:
    count = 0
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "tune": "stillimage"}
        stream.codec_context.thread_count = 2  # fixed, so the bytes do not depend on the host
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        for packet in stream.encode():
            container.mux(packet)
    return count
