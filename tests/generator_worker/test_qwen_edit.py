"""The qwen-image-edit backend on tiny random weights written in the published layout here
(``save_pretrained`` of tiny configs, the tokenizer built with ``tokenizers``; no hub access),
loaded through the production loader on CPU. Skipped without the ``gpu`` extra."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from generator_worker.generation import (
    BackendUnavailableError,
    GarmentCategory,
    GarmentImage,
    GarmentSide,
    PoseHint,
    UnsupportedRequestError,
    build_generator,
)
from tests.generator_worker.conftest import (
    OverlapProbe,
    decode,
    draw_trousers,
    encode_png,
    image_request,
    run_concurrently,
    top,
)

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from benchmarks.random_weights.qwen import write_lora, write_qwen_image_edit  # noqa: E402
from generator_worker.generation.hf_layout import GpuOptions  # noqa: E402
from generator_worker.generation.qwen_edit import QwenImageEditGenerator, build_prompt  # noqa: E402


@pytest.fixture(autouse=True)
def _small_condition_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline encodes every input picture at ~1 megapixel whatever the output size; at
    that size the tiny models still take a minute on CPU, so the tests shrink it."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as module

    monkeypatch.setattr(module, "VAE_IMAGE_SIZE", 64 * 64)
    monkeypatch.setattr(module, "CONDITION_IMAGE_SIZE", 56 * 56)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_qwen_image_edit(tmp_path_factory.mktemp("qwen-edit"))


@pytest.fixture(scope="module")
def generator(model_dir: Path) -> Iterator[QwenImageEditGenerator]:
    backend = build_generator("qwen-image-edit", gpu=GpuOptions(model_dir=model_dir, steps=2, guidance=1.0))
    assert isinstance(backend, QwenImageEditGenerator)
    yield backend
    backend.close()


def test_writes_the_published_layout(model_dir: Path) -> None:
    for name in (
        "model_index.json",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer_config.json",
        "scheduler/scheduler_config.json",
    ):
        assert (model_dir / name).is_file(), name


def test_refuses_an_incomplete_directory_listing_missing_files(model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "transformer/diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(broken / "processor")
    with pytest.raises(BackendUnavailableError) as info:
        build_generator("qwen-image-edit", gpu=GpuOptions(model_dir=broken))
    message = info.value.message
    assert "transformer/diffusion_pytorch_model.safetensors" in message
    assert "processor/preprocessor_config.json or processor/processor_config.json" in message
    assert "model_index.json" not in message
    with pytest.raises(BackendUnavailableError, match="VTO_GPU_MODEL_DIR"):
        build_generator("qwen-image-edit")


def test_generates_images_of_the_requested_size_deterministically(
    generator: QwenImageEditGenerator, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    request = image_request(astronaut_png, (top(tshirt_png),), width=136, height=128, seed=3, num_outputs=2)
    single = image_request(astronaut_png, (top(tshirt_png),), width=136, height=128, seed=3)
    first, second = generator.generate_batch([request, single])
    assert not isinstance(first, Exception) and not isinstance(second, Exception)
    assert first.outputs[0].data == second.outputs[0].data  # the same seed gives the same image
    assert first.outputs[0].data != first.outputs[1].data  # one seed per output
    for output in first.outputs:
        assert (output.width, output.height, output.media_type) == (136, 128, "image/png")
        assert decode(output.data).shape == (128, 136, 3)
    assert first.backend == "qwen-image-edit"
    assert set(first.timings_ms) >= {"prepare", "diffusion", "encode", "total"}


def test_batch_reports_bad_requests_in_place(
    generator: QwenImageEditGenerator, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    good = image_request(astronaut_png, (top(tshirt_png),), width=128, height=128)
    too_many = image_request(astronaut_png, (top(tshirt_png),) * 3, width=128, height=128)
    bad, ok = generator.generate_batch([too_many, good])
    assert isinstance(bad, UnsupportedRequestError)
    assert not isinstance(ok, Exception) and len(ok.outputs) == 1
    with pytest.raises(UnsupportedRequestError):
        generator.generate(image_request(astronaut_png, (top(tshirt_png),), width=64, height=64))


def test_prompt_names_each_garment_by_category_and_side() -> None:
    trousers = GarmentImage(encode_png(draw_trousers()), GarmentCategory.BOTTOM, GarmentSide.BACK)
    prompt = build_prompt((top(b"x"), trousers), PoseHint.AUTO)
    assert "Picture 2 shows the front of a top" in prompt
    assert "Picture 3 shows the back of a bottom" in prompt
    assert "in the top from Picture 2" in prompt and "in the bottom from Picture 3" in prompt
    # a back photo says nothing about the person: no facing is claimed
    assert "seen from behind" not in prompt and "faces the camera in Picture 1" in prompt
    dress = build_prompt((GarmentImage(b"x", GarmentCategory.DRESS),), PoseHint.FRONT)
    assert "in the dress from Picture 2" in dress and "The person faces the camera" in dress
    assert "seen from behind" not in dress
    outer = build_prompt((GarmentImage(b"x", GarmentCategory.OUTER),))
    assert "over the current clothes" in outer


def test_front_and_back_photos_of_one_garment_are_one_garment() -> None:
    views = (top(b"f"), top(b"b", GarmentSide.BACK))
    prompt = build_prompt(views, PoseHint.AUTO)
    assert "Picture 2 shows the front and Picture 3 the back of the same top" in prompt
    assert "Dress the person from Picture 1 in the top from Pictures 2 and 3," in prompt
    assert prompt.count("Dress the person") == 1  # not "both tops"
    assert "seen from behind" not in prompt
    behind = build_prompt(views, PoseHint.BACK)
    assert "seen from behind, so show the back of the clothes, as photographed in Picture 3" in behind
    facing = build_prompt(views, PoseHint.FRONT)
    assert "faces the camera, so show the front of the clothes, as photographed in Picture 2" in facing
    # two fronts of one category are two garments (as asked)
    assert build_prompt((top(b"a"), top(b"b")), PoseHint.AUTO).count("Dress the person") == 2


def test_lora_is_fused_from_a_local_file(model_dir: Path, tmp_path: Path) -> None:
    plain = QwenImageEditGenerator(GpuOptions(model_dir=model_dir, steps=1, guidance=1.0))
    lora = tmp_path / "style.safetensors"
    targets = write_lora(lora, plain.pipeline, rank=2)
    fused = QwenImageEditGenerator(GpuOptions(model_dir=model_dir, steps=1, guidance=1.0, lora_path=lora))
    name = targets[0]
    before = dict(plain.pipeline.transformer.named_modules())[name].weight
    after = dict(fused.pipeline.transformer.named_modules())[name].weight
    assert not torch.allclose(before, after)
    assert np.isfinite(after.detach().numpy()).all()
    # not a Lightning LoRA: the model's own scheduler stays
    assert fused.pipeline.scheduler.config.shift_terminal == plain.pipeline.scheduler.config.shift_terminal
    with pytest.raises(BackendUnavailableError, match="does not exist"):
        QwenImageEditGenerator(GpuOptions(model_dir=model_dir, lora_path=tmp_path / "absent.safetensors"))


def test_a_lightning_lora_installs_its_shift_3_scheduler_steps_and_guidance(
    model_dir: Path, tmp_path: Path
) -> None:
    plain = QwenImageEditGenerator(GpuOptions(model_dir=model_dir, steps=1, guidance=1.0))
    lora = tmp_path / "Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors"
    write_lora(lora, plain.pipeline, rank=2, style="kohya", alpha=2.0)
    fast = QwenImageEditGenerator(GpuOptions(model_dir=model_dir, lora_path=lora))
    config = fast.pipeline.scheduler.config
    assert config.base_shift == pytest.approx(math.log(3)) and config.max_shift == pytest.approx(math.log(3))
    assert config.shift_terminal is None and config.use_dynamic_shifting
    assert plain.pipeline.scheduler.config.shift_terminal is not None  # the base model's differs
    assert (fast.steps, fast.guidance) == (4, 1.0)
    # the sigmas at 4 steps are those of shift 3 (exponential shift with mu = log 3)
    fast.pipeline.scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.25, 4), mu=math.log(3))
    shifted = 3 * 0.5 / (1 + 2 * 0.5)
    assert float(fast.pipeline.scheduler.sigmas[2]) == pytest.approx(shifted, rel=1e-4)
    explicit = QwenImageEditGenerator(GpuOptions(model_dir=model_dir, lora_path=lora, steps=6, guidance=2.0))
    assert (explicit.steps, explicit.guidance) == (6, 2.0)
    kept = QwenImageEditGenerator(GpuOptions(model_dir=model_dir, lora_path=lora, lora_scheduler="base"))
    assert kept.pipeline.scheduler.config.shift_terminal == plain.pipeline.scheduler.config.shift_terminal
    assert kept.steps == 40
    named = tmp_path / "distilled.safetensors"
    shutil.copy(lora, named)
    forced = QwenImageEditGenerator(
        GpuOptions(model_dir=model_dir, lora_path=named, lora_scheduler="lightning")
    )
    assert forced.pipeline.scheduler.config.shift_terminal is None and forced.steps == 8


def test_fp16_is_refused_at_start_with_a_clear_error(model_dir: Path) -> None:
    with pytest.raises(BackendUnavailableError, match=r"does not run in fp16.*VTO_GPU_DTYPE=bf16"):
        QwenImageEditGenerator(GpuOptions(model_dir=model_dir, dtype="fp16", device="cpu"))


def test_concurrent_jobs_make_one_pipeline_call_at_a_time(
    model_dir: Path, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    """Worker threads share one generator (``vto worker --concurrency N``, batch 1): the
    flow-matching scheduler's step index and sigmas are shared state."""
    backend = QwenImageEditGenerator(GpuOptions(model_dir=model_dir, steps=2, guidance=1.0))
    probe = OverlapProbe(backend.pipeline)
    backend.pipeline = probe
    requests = [
        image_request(astronaut_png, (top(tshirt_png),), width=128, height=128, seed=seed)
        for seed in range(3)
    ]
    results = run_concurrently([lambda r=r: backend.generate(r) for r in requests])
    assert probe.calls == 3 and probe.most == 1
    assert len({result.outputs[0].data for result in results}) == 3


def test_model_offload_and_vae_tiling_are_installed(
    model_dir: Path, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    backend = QwenImageEditGenerator(
        GpuOptions(model_dir=model_dir, steps=2, guidance=1.0, device="cpu", offload="model", vae_tiling=True)
    )
    assert backend.pipeline._all_hooks and backend.pipeline.vae.use_tiling
    result = backend.generate(image_request(astronaut_png, (top(tshirt_png),), width=128, height=128))
    assert result.outputs[0].width == 128
