"""The diffusion backend with tiny random-weight models built here (skipped without torch)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from generator_worker.generation import BackendUnavailableError, build_generator
from tests.generator_worker.conftest import decode, image_request, top

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-vto")
    torch.manual_seed(0)
    diffusers.UNet2DModel(
        sample_size=(8, 16),
        in_channels=9,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).save_pretrained(folder / "unet")
    diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
    ).save_pretrained(folder / "vae")
    diffusers.DDIMScheduler().save_pretrained(folder / "scheduler")
    (folder / "vto_pipeline.json").write_text(
        json.dumps(
            {
                "name": "tiny",
                "license": "MIT",
                "commercial_use": True,
                "width": 128,
                "height": 128,
                "steps": 2,
            }
        )
    )
    return folder


def test_refuses_to_start_without_weights(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="weights missing"):
        build_generator("diffusion", weights_dir=tmp_path)


def test_generates_batches_deterministically_from_local_weights(
    weights: Path, astronaut_png: bytes, tshirt_png: bytes, astronaut: np.ndarray
) -> None:
    generator = build_generator("diffusion", weights_dir=weights)
    try:
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        assert generator.info.commercial_use is True and generator.info.license == "MIT"
        request = image_request(astronaut_png, (top(tshirt_png),), width=256, height=256, seed=3)
        first, second = generator.generate_batch([request, request])
        assert not isinstance(first, Exception) and not isinstance(second, Exception)
        assert first.outputs[0].data == second.outputs[0].data
        out = decode(first.outputs[0].data)
        assert out.shape == (256, 256, 3)
        # outside the garment mask (the face) the photo is kept
        small = decode(first.outputs[0].data)[40:90, 90:130].astype(np.float32)
        assert small.std() > 5
        bad = image_request(b"nope", (top(tshirt_png),), width=256, height=256)
        results = generator.generate_batch([bad, request])
        assert isinstance(results[0], Exception) and results[0].retryable is False  # type: ignore[union-attr]
        assert not isinstance(results[1], Exception)
    finally:
        generator.close()
