"""Lookbook videos: an H.264 MP4 that decodes to the expected frames."""

from __future__ import annotations

import io

import av
import numpy as np

from generator_worker.generation import JobKind
from generator_worker.generation.offline import OfflineGenerator
from generator_worker.generation.video import encode_mp4, frame_count, lookbook_frames
from tests.generator_worker.conftest import RED, image_request, near, top


def _decode(data: bytes) -> tuple[str, list[np.ndarray]]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    return codec, frames


def test_video_job_is_an_h264_mp4_with_the_expected_frames(
    generator: OfflineGenerator, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    request = image_request(
        astronaut_png,
        (top(tshirt_png),),
        kind=JobKind.VIDEO,
        width=256,
        height=320,
        num_outputs=2,
        fps=8,
        seconds_per_output=1.0,
    )
    result = generator.generate(request)
    (output,) = result.outputs
    assert output.media_type == "video/mp4"
    assert output.frames == 16
    codec, frames = _decode(output.data)
    assert codec == "h264"
    assert len(frames) == 16
    assert frames[0].shape == (320, 256, 3)
    # the garment is on screen in the clip (centre-lower part of the frame)
    assert near(frames[0][200:300, 80:180], RED, 90).mean() > 0.5
    assert "video" in result.timings_ms


def test_lookbook_moves_the_camera_and_crossfades() -> None:
    a = np.zeros((64, 48, 3), np.uint8)
    a[:, ::4] = 255  # stripes, so zoom changes pixels
    b = np.full((64, 48, 3), 128, np.uint8)
    frames = list(lookbook_frames([a, b], fps=10, seconds_per_output=1.0))
    assert len(frames) == frame_count(2, 10, 1.0) == 20
    assert not np.array_equal(frames[0], frames[5])  # camera motion
    # the last frame of the first output is already blending towards the second
    assert abs(float(frames[9].mean()) - 128) < abs(float(frames[0].mean()) - 128)
    data, count = encode_mp4(iter(frames), 48, 64, 10)
    assert count == 20
    assert data[4:8] == b"ftyp"
