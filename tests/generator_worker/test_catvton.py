"""The catvton backend on tiny random weights written in the published layout here (SD-inpainting
UNet, VAE and scheduler via ``save_pretrained``, the CatVTON self-attention file via safetensors; no
hub access), loaded through the production loader on CPU. Skipped without the ``gpu`` extra."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from generator_worker.generation import (
    BackendUnavailableError,
    GarmentCategory,
    GarmentImage,
    UnsupportedRequestError,
    build_generator,
)
from tests.generator_worker.conftest import decode, image_request, top

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from safetensors.torch import load_file, save_file  # noqa: E402

from benchmarks.random_weights.catvton import (  # noqa: E402
    ATTENTION_FILE,
    catvton_components,
    write_catvton,
)
from generator_worker.generation.catvton import CatVTONGenerator  # noqa: E402
from generator_worker.generation.hf_layout import GpuOptions  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catvton(tmp_path_factory.mktemp("catvton"), seed=1)


@pytest.fixture(scope="module")
def generator(model_dir: Path) -> Iterator[CatVTONGenerator]:
    backend = build_generator("catvton", gpu=GpuOptions(model_dir=model_dir, steps=2, batch=3))
    assert isinstance(backend, CatVTONGenerator)
    yield backend
    backend.close()


def test_info_declares_the_non_commercial_license(generator: CatVTONGenerator) -> None:
    assert generator.info.commercial_use is False
    assert "CC BY-NC-SA" in generator.info.license


def test_refuses_an_incomplete_directory_listing_missing_files(model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    shutil.rmtree(broken / "mix-48k-1024")
    (broken / "vae/config.json").unlink()
    with pytest.raises(BackendUnavailableError) as info:
        build_generator("catvton", gpu=GpuOptions(model_dir=broken))
    message = info.value.message
    assert "vae/config.json" in message and "mix-48k-1024/attention/model.safetensors or " in message
    assert "unet/config.json" not in message


def test_loads_the_published_attention_weights_and_refuses_foreign_ones(
    model_dir: Path, tmp_path: Path
) -> None:
    loaded = CatVTONGenerator(GpuOptions(model_dir=model_dir, steps=1))
    saved = load_file(str(model_dir / ATTENTION_FILE))
    fresh = catvton_components(seed=99)["unet"]  # different random self-attention
    key = next(k for k in saved if k.endswith("to_q.weight"))
    index, rest = key.split(".", 1)
    modules = [m for n, m in loaded.unet.named_modules() if "attn1" in n]
    assert torch.equal(modules[int(index)].get_parameter(rest), saved[key])
    fresh_modules = [m for n, m in fresh.named_modules() if "attn1" in n]
    assert not torch.equal(fresh_modules[int(index)].get_parameter(rest), saved[key])
    # every cross-attention is skipped: its processor returns the input unchanged
    skipped = [name for name, proc in loaded.unet.attn_processors.items() if "attn2" in name]
    assert skipped and all(
        type(loaded.unet.attn_processors[n]).__name__ == "SkipAttnProcessor" for n in skipped
    )
    partial = tmp_path / "partial"
    shutil.copytree(model_dir, partial)
    save_file({k: v for k, v in saved.items() if k != key}, str(partial / ATTENTION_FILE))
    with pytest.raises(BackendUnavailableError, match="missing"):
        CatVTONGenerator(GpuOptions(model_dir=partial))


def test_batches_outputs_across_requests_at_the_requested_size(
    generator: CatVTONGenerator, astronaut_png: bytes, tshirt_png: bytes, astronaut: NDArray[np.uint8]
) -> None:
    two = image_request(astronaut_png, (top(tshirt_png),), width=96, height=128, seed=5, num_outputs=2)
    one = image_request(astronaut_png, (top(tshirt_png),), width=96, height=128, seed=5)
    too_many = image_request(astronaut_png, (top(tshirt_png), top(tshirt_png)), width=96, height=128)
    first, second, bad = generator.generate_batch([two, one, too_many])
    assert isinstance(bad, UnsupportedRequestError)
    assert not isinstance(first, Exception) and not isinstance(second, Exception)
    assert len(first.outputs) == 2 and len(second.outputs) == 1
    # same seed and index: the same image (up to rounding: batch rows may differ in the last
    # float bits), whichever batch row it ran in; another index: another image
    out, other = (decode(o.data).astype(int) for o in first.outputs)
    again = decode(second.outputs[0].data).astype(int)
    assert np.abs(out - again).max() <= 2
    assert np.abs(out - other).mean() > 1
    assert out.shape == (128, 96, 3)
    # outside the repainted region (the top-left corner) the photo is kept
    photo = np.asarray(Image.fromarray(astronaut).resize((128, 128)))[:, 16:112].astype(int)
    assert np.abs(out[:12, :12] - photo[:12, :12]).mean() < 12
    assert first.backend == "catvton" and first.timings_ms["total"] > 0


def test_mask_follows_the_category(generator: CatVTONGenerator, astronaut: NDArray[np.uint8]) -> None:
    person = Image.fromarray(astronaut).resize((256, 256))
    upper = np.asarray(generator.mask(person, GarmentCategory.TOP)) > 0
    dress = np.asarray(generator.mask(person, GarmentCategory.DRESS)) > 0
    assert 0.05 < upper.mean() < 0.8
    assert dress.sum() >= upper.sum()
    assert not upper[:20].any()  # the head is never repainted


def test_generate_rejects_a_second_garment(
    generator: CatVTONGenerator, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    dress = GarmentImage(tshirt_png, GarmentCategory.DRESS)
    with pytest.raises(UnsupportedRequestError):
        generator.generate(image_request(astronaut_png, (top(tshirt_png), dress), width=96, height=128))
