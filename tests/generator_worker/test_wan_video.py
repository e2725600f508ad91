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

from generator_worker.generation import (
    BackendUnavailableError,
    GenerationRequest,
    GenerationResult,
    Generator,
    JobKind,
)
from generator_worker.generation.offline import OfflineGenerator
from tests.generator_worker.conftest import OverlapProbe, image_request, run_concurrently, top

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from benchmarks.random_weights.wan import write_random_wan  # noqa: E402
from generator_worker.generation.wan_video import (  # noqa: E402
    WAN21_I2V_480P,
    WAN21_I2V_720P,
    WAN22_I2V_A14B,
    WAN22_TI2V_5B,
    WanVideoGenerator,
    clip_frames,
    required_files,
    run_size,
    wan_family,
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
    # no length asked: the model's own clip (Wan 2.1: 81 frames, TI2V-5B: 121)
    assert clip_frames(16, None, max_frames=81, model_frames=81) == 81
    assert clip_frames(24, None, max_frames=121, model_frames=121) == 121


def test_clips_run_at_the_jobs_aspect_within_the_models_area() -> None:
    # diffusers' Wan I2V example: 480*832 pixels, sides multiples of 16 (Wan 2.1) or 32 (2.2)
    assert run_size(768, 1024, 480 * 832, 16) == (544, 720)
    assert run_size(1024, 768, 480 * 832, 16) == (720, 544)
    assert run_size(768, 1024, 704 * 1280, 32) == (800, 1088)
    width, height = run_size(720, 1280, 480 * 832, 16)
    assert width * height <= 480 * 832 and abs(height / width - 1280 / 720) < 0.05


def test_the_family_gives_the_rate_frames_and_area_upstream_generates_with(tmp_path: Path) -> None:
    assert (WAN21_I2V_480P.fps, WAN21_I2V_480P.frames, WAN21_I2V_480P.max_area) == (16, 81, 480 * 832)
    assert (WAN22_TI2V_5B.fps, WAN22_TI2V_5B.frames, WAN22_TI2V_5B.max_area) == (24, 121, 704 * 1280)
    assert (WAN22_I2V_A14B.fps, WAN22_I2V_A14B.frames) == (16, 81)
    for variant, family in (
        ("wan2.2-ti2v-5b", WAN22_TI2V_5B),
        ("wan2.1-i2v-14b-480p", WAN21_I2V_480P),
        ("wan2.2-i2v-a14b", WAN22_I2V_A14B),
    ):
        assert wan_family(write_random_wan(tmp_path / variant, variant)) == family
    shutil.copytree(tmp_path / "wan2.1-i2v-14b-480p", tmp_path / "Wan2.1-I2V-14B-720P-Diffusers")
    assert wan_family(tmp_path / "Wan2.1-I2V-14B-720P-Diffusers") == WAN21_I2V_720P


def test_video_job_animates_the_try_on_image_into_an_mp4(
    ti2v_dir: Path, generator: OfflineGenerator, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    wan = WanVideoGenerator(ti2v_dir, generator, device="cpu", steps=2, guidance=1.0, max_area=136 * 160)
    assert wan.info.name == "offline+wan"
    assert JobKind.VIDEO in wan.info.job_kinds and "Apache-2.0" in wan.info.license
    # within 136x160 pixels at the job's aspect, each side a multiple of the model's 32 pixels:
    # it runs at 128x160 and is resized back
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
    assert output.frames == 9 and output.fps == 8  # the job's rate and length
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
    wan = WanVideoGenerator(
        ti2v_dir, generator, device="cpu", steps=1, guidance=1.0, max_frames=5, max_area=128 * 128
    )
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


class _Probed(Generator):
    """An image generator whose calls go through an :class:`OverlapProbe`."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.info = inner.info
        self.probe = OverlapProbe(inner.generate)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        result: GenerationResult = self.probe(request)
        return result


def test_a_job_without_a_rate_or_length_gets_the_models(
    ti2v_dir: Path, generator: OfflineGenerator, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    """Wan2.2-TI2V-5B generates 121 frames at 24 fps (its published config), whatever the
    lookbook clip's defaults are."""
    wan = WanVideoGenerator(ti2v_dir, generator, device="cpu", steps=1, guidance=1.0, max_area=64 * 64)
    assert (wan.fps, wan.frames, wan.max_frames) == (24, 121, 121)
    request = image_request(astronaut_png, (top(tshirt_png),), kind=JobKind.VIDEO, width=128, height=128)
    (output,) = wan.generate(request).outputs
    assert (output.frames, output.fps) == (121, 24)
    assert output.duration_s == pytest.approx(121 / 24)
    with av.open(io.BytesIO(output.data), mode="r") as container:
        assert container.streams.video[0].average_rate == 24


def test_wan22_a14b_loads_both_experts_at_16_fps(
    tmp_path: Path, generator: OfflineGenerator, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    folder = write_random_wan(tmp_path / "a14b", "wan2.2-i2v-a14b")
    wan = WanVideoGenerator(folder, generator, device="cpu", steps=2, guidance=1.0, max_area=64 * 64)
    assert wan.family == WAN22_I2V_A14B and wan._pipeline.transformer_2 is not None
    request = image_request(
        astronaut_png, (top(tshirt_png),), kind=JobKind.VIDEO, width=128, height=128, seconds_per_output=0.25
    )
    (output,) = wan.generate(request).outputs
    assert (output.frames, output.fps) == (5, 16)  # 16 fps x 0.25 s, at least 5 frames


def test_vae_and_image_encoder_load_in_fp32_as_upstream(tmp_path: Path) -> None:
    folder = write_random_wan(tmp_path / "wan21", "wan2.1-i2v-14b-480p")
    wan = WanVideoGenerator(folder, OfflineGenerator.__new__(OfflineGenerator), device="cpu", dtype="bf16")
    pipeline = wan._pipeline
    assert pipeline.transformer.dtype == torch.bfloat16
    assert pipeline.vae.dtype == torch.float32 and pipeline.image_encoder.dtype == torch.float32
    assert pipeline.text_encoder is None  # freed once the prompts are encoded
    assert wan._prompt_embeds.dtype == torch.bfloat16


def test_concurrent_video_jobs_run_wan_and_the_image_generator_one_call_at_a_time(
    ti2v_dir: Path, generator: OfflineGenerator, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    images = _Probed(generator)
    wan = WanVideoGenerator(ti2v_dir, images, device="cpu", steps=1, guidance=1.0, max_area=64 * 64)
    animations = OverlapProbe(wan._pipeline)
    wan._pipeline = animations
    requests = [
        image_request(
            astronaut_png, (top(tshirt_png),), kind=JobKind.VIDEO, width=128, height=128, fps=4, seed=seed
        )
        for seed in range(3)
    ]
    results = run_concurrently([lambda r=r: wan.generate(r) for r in requests])
    assert images.probe.calls == 3 and images.probe.most == 1
    assert animations.calls == 3 and animations.most == 1
    assert all(result.outputs[0].fps == 4 for result in results)


def test_model_offload_and_vae_tiling(
    ti2v_dir: Path, generator: OfflineGenerator, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    wan = WanVideoGenerator(
        ti2v_dir, generator, device="cpu", steps=1, max_area=64 * 64, offload="model", vae_tiling=True
    )
    assert wan._pipeline._all_hooks and wan._pipeline.vae.use_tiling
    request = image_request(
        astronaut_png,
        (top(tshirt_png),),
        kind=JobKind.VIDEO,
        width=128,
        height=128,
        fps=4,
        seconds_per_output=1,
    )
    assert wan.generate(request).outputs[0].frames == 5


def test_the_registry_offloads_the_image_backend_beside_wan(ti2v_dir: Path, tmp_path: Path) -> None:
    from benchmarks.random_weights.catvton import write_catvton
    from generator_worker.generation import build_generator
    from generator_worker.generation.catvton import CatVTONGenerator
    from generator_worker.generation.hf_layout import GpuOptions

    options = GpuOptions(model_dir=write_catvton(tmp_path / "catvton"), device="cpu")
    video = build_generator(
        "wan", gpu=options, video_model_dir=ti2v_dir, video_image_generator="catvton", video_max_area=96 * 96
    )
    assert isinstance(video, WanVideoGenerator) and isinstance(video.image_generator, CatVTONGenerator)
    assert video.image_generator.offload and video.max_area == 96 * 96
    resident = build_generator(
        "wan",
        gpu=options,
        video_model_dir=ti2v_dir,
        video_image_generator="catvton",
        video_image_offload="none",
    )
    assert isinstance(resident, WanVideoGenerator) and isinstance(resident.image_generator, CatVTONGenerator)
    assert not resident.image_generator.offload and resident.max_area == 704 * 1280
    video.close()
    resident.close()
