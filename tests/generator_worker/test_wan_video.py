"""Wan 2.x image-to-video: tiny random weights saved in the published layout, loaded through
the production loader, animating the offline backend's try-on image (skipped without torch)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from numpy.typing import NDArray

from generator_worker.generation import BackendUnavailableError, JobKind
from generator_worker.generation.offline import OfflineGenerator
from tests.generator_worker.conftest import image_request, top

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from benchmarks.random_weights.wan import write_random_wan
from generator_worker.generation.wan_video import (
    WanVideoGenerator,
    clip_frames,
    required_files,
)


@pytest.fixture(scope="module")
def ti2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_wan(tmp_path_factory.mktemp("wan22"), "wan2.2-ti2v-5b", "tiny")


def _decode(data: bytes) -> tuple[str, list[NDArray[np.uint8]]]:
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        frames = [np.asarray(f.to_ndarray(format="rgb24"), np.uint8) for f in container.decode(stream)]
        return stream.codec_context.name, frames


def test_clip_frames_follow_wans_4k_plus_1() -> None:
    assert clip_frames(8, 1.0) == 9
    assert clip_frames(24, 2.0) == 49
    assert clip_frames(1, 0.25) == 5  # at least one latent frame after the first
    assert clip_frames(24, 10.0, max_frames=81) == 81
    assert all((clip_frames(fps, 1.5) - 1) % 4 == 0 for fps in range(1, 61))


def test_video_job_animates_the_try_on_image_into_an_mp4(
    ti2v_dir: Path, generator: OfflineGenerator, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    wan = WanVideoGenerator(ti2v_dir, generator, device="cpu", steps=2, guidance=1.0)
    assert wan.info.name == "offline+wan"
    assert JobKind.VIDEO in wan.info.job_kinds and "Apache-2.0" in wan.info.license
    # 136 is not a multiple of the model's 32 pixels: it runs at 128 and is resized back
    request = image_request(
        astronaut_png,
        (top(tshirt_png),),
        kind=JobKind.VIDEO,
        width=136,
        height=160,
        fps=8,
        seconds_per_output=1.0,
    )
    result = wan.generate(request)
    (output,) = result.outputs
    assert output.media_type == "video/mp4"
    assert output.frames == 9
    codec, frames = _decode(output.data)
    assert codec == "h264"
    assert len(frames) == 9
    assert frames[0].shape == (160, 136, 3)
    assert {"animate", "encode", "total", "image.total"} <= set(result.timings_ms)
    # the same image and seed give the same frames; another seed others
    still = wan.image_generator.generate(
        image_request(astronaut_png, (top(tshirt_png),), width=128, height=128)
    )
    png = still.outputs[0].data
    first, again, other = (np.stack(wan._animate(png, 64, 64, 5, seed, 0)) for seed in (3, 3, 4))
    assert first.shape == (5, 64, 64, 3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    # image jobs are the image backend's
    assert still.outputs[0].media_type == "image/png"
    assert (
        wan.generate(image_request(astronaut_png, (top(tshirt_png),), width=128, height=128)).backend
        == "offline"
    )


def test_two_outputs_play_one_after_the_other(
    ti2v_dir: Path, generator: OfflineGenerator, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    wan = WanVideoGenerator(ti2v_dir, generator, device="cpu", steps=1, guidance=1.0, max_frames=5)
    request = image_request(
        astronaut_png,
        (top(tshirt_png),),
        kind=JobKind.VIDEO,
        width=128,
        height=128,
        num_outputs=2,
        fps=8,
        seconds_per_output=2.0,
    )
    (output,) = wan.generate(request).outputs
    assert output.frames == 10  # 2 clips of max_frames
    assert len(_decode(output.data)[1]) == 10


def test_wan21_layout_needs_its_image_encoder(tmp_path: Path) -> None:
    folder = write_random_wan(tmp_path / "wan21", "wan2.1-i2v-14b-480p", "tiny")
    needed = {need if isinstance(need, str) else need[0] for need in required_files(folder)}
    assert {"image_encoder/config.json", "image_processor/preprocessor_config.json"} <= needed
    shutil.rmtree(folder / "image_encoder")
    with pytest.raises(BackendUnavailableError) as refused:
        WanVideoGenerator(folder, OfflineGenerator.__new__(OfflineGenerator), device="cpu")
    assert "image_encoder/config.json" in refused.value.message
    assert "image_encoder/model.safetensors" in refused.value.message
    # listed in model_index.json or not: a transformer with image cross-attention needs one
    index = json.loads((folder / "model_index.json").read_text())
    index["image_encoder"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))
    assert "image_encoder/config.json" in {n if isinstance(n, str) else n[0] for n in required_files(folder)}


def test_incomplete_or_missing_dir_is_refused_with_the_missing_files(ti2v_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(ti2v_dir, broken)
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(BackendUnavailableError) as refused:
        WanVideoGenerator(broken, OfflineGenerator.__new__(OfflineGenerator), device="cpu")
    message = refused.value.message
    assert "transformer/diffusion_pytorch_model.safetensors" in message
    assert "tokenizer/tokenizer_config.json" in message
    assert "vae/" not in message  # present files are not listed
    with pytest.raises(BackendUnavailableError, match=r"model_index\.json"):
        WanVideoGenerator(tmp_path / "nowhere", OfflineGenerator.__new__(OfflineGenerator), device="cpu")
