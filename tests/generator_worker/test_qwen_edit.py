"""The qwen-image-edit backend on tiny random weights written in the published layout here
(``save_pretrained`` of tiny configs, the tokenizer built with ``tokenizers``; no hub access),
loaded through the production loader on CPU. Skipped without the ``gpu`` extra."""

from __future__ import annotations

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
from tests.generator_worker.conftest import decode, draw_trousers, encode_png, image_request, top

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
    assert "seen from behind" in prompt
    dress = build_prompt((GarmentImage(b"x", GarmentCategory.DRESS),), PoseHint.FRONT)
    assert "in the dress from Picture 2" in dress and "faces the camera" in dress
    assert "seen from behind" not in dress
    outer = build_prompt((GarmentImage(b"x", GarmentCategory.OUTER),))
    assert "over the current clothes" in outer


def test_lora_is_fused_from_a_local_file(model_dir: Path, tmp_path: Path) -> None:
    plain = QwenImageEditGenerator(GpuOptions(model_dir=model_dir, steps=1, guidance=1.0))
    lora = tmp_path / "lightning.safetensors"
    targets = write_lora(lora, plain.pipeline, rank=2)
    fused = QwenImageEditGenerator(GpuOptions(model_dir=model_dir, steps=1, guidance=1.0, lora_path=lora))
    name = targets[0]
    before = dict(plain.pipeline.transformer.named_modules())[name].weight
    after = dict(fused.pipeline.transformer.named_modules())[name].weight
    assert not torch.allclose(before, after)
    assert np.isfinite(after.detach().numpy()).all()
    with pytest.raises(BackendUnavailableError, match="does not exist"):
        QwenImageEditGenerator(GpuOptions(model_dir=model_dir, lora_path=tmp_path / "absent.safetensors"))
