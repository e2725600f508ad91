"""The catvton backend on tiny random weights written in the published layout (SD-inpainting
UNet, VAE and scheduler via ``save_pretrained``, the CatVTON self-attention file in upstream's
numbering; no hub access), loaded through the production loader on CPU. Skipped without the
``gpu`` extra."""

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
from tests.generator_worker.conftest import OverlapProbe, decode, image_request, run_concurrently, top

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from safetensors.torch import load_file, save_file  # noqa: E402

from benchmarks.random_weights.catvton import (  # noqa: E402
    ATTENTION_FILE,
    attention_state_dict,
    catvton_components,
    write_catvton,
)
from generator_worker.generation import catvton  # noqa: E402
from generator_worker.generation.catvton import CatVTONGenerator, pose_mask  # noqa: E402
from generator_worker.generation.hf_layout import GpuOptions  # noqa: E402

BLOCK_TENSORS = ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias")


def upstream_keys(blocks: int) -> set[str]:
    """The published file's keys, written out from upstream's numbering (8 modules a
    self-attention block in its ModuleList; each shared tensor under its first name)."""
    return {f"{8 * block}.{name}" for block in range(blocks) for name in BLOCK_TENSORS}


def attn1_blocks(unet: object) -> list[object]:
    return [m for n, m in unet.named_modules() if n.endswith(".attn1")]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catvton(tmp_path_factory.mktemp("catvton"), seed=1)


@pytest.fixture(scope="module")
def generator(model_dir: Path) -> Iterator[CatVTONGenerator]:
    backend = build_generator("catvton", gpu=GpuOptions(model_dir=model_dir, steps=2, batch=3))
    assert isinstance(backend, CatVTONGenerator)
    yield backend
    backend.close()


def test_info_declares_the_non_commercial_license_of_code_and_checkpoints(
    generator: CatVTONGenerator,
) -> None:
    assert generator.info.commercial_use is False
    assert "CC BY-NC-SA 4.0 (CatVTON: code, checkpoints and demo" in generator.info.license
    assert "OpenRAIL-M" in generator.info.license


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


# --- the published attention file ---------------------------------------------------------------


def test_the_written_attention_file_has_upstreams_numbering_without_aliases(model_dir: Path) -> None:
    saved = load_file(str(model_dir / ATTENTION_FILE))
    blocks = len(attn1_blocks(catvton_components()["unet"]))
    assert blocks == 4  # down, mid and two up blocks
    assert set(saved) == upstream_keys(blocks)  # 0.*, 8.*, 16.*, 24.*: 8 slots a block
    assert not {"1.weight", "4.0.weight", "5.bias", "9.weight"} & set(saved)  # upstream issue 109


def test_the_full_sd15_unet_maps_the_published_80_tensors() -> None:
    unet = catvton_components("full", device="meta", dtype=torch.float32)["unet"]
    mapping = catvton.attention_parameters(unet)
    assert set(mapping) == upstream_keys(16)
    assert sum(p.numel() for p in mapping.values()) == 49_574_080  # upstream: "49.57M trainable"
    modules = dict(unet.named_modules())
    second = modules["down_blocks.0.attentions.1.transformer_blocks.0.attn1"]
    assert mapping["8.to_q.weight"] is second.to_q.weight
    assert (
        mapping["120.to_out.0.bias"]
        is modules["mid_block.attentions.0.transformer_blocks.0.attn1"].to_out[0].bias
    )
    # upstream's own procedure (module processors, the "attn1" ModuleList, first names kept)
    written = attention_state_dict(unet)
    assert {k: tuple(v.shape) for k, v in written.items()} == {k: tuple(p.shape) for k, p in mapping.items()}


def test_each_published_key_lands_in_its_block(model_dir: Path, tmp_path: Path) -> None:
    """A file written from the published numbering alone (not by the writer under test), each
    tensor filled with its block's number: ``8.to_q.weight`` must fill the second attn1."""
    unet = catvton_components(seed=3)["unet"]
    blocks = attn1_blocks(unet)
    tensors = {}
    for index, block in enumerate(blocks):
        for name, parameter in block.named_parameters():  # type: ignore[attr-defined]
            tensors[f"{8 * index}.{name}"] = torch.full(tuple(parameter.shape), float(index + 1))
    folder = tmp_path / "numbered"
    shutil.copytree(model_dir, folder)
    save_file(tensors, str(folder / ATTENTION_FILE))
    loaded = CatVTONGenerator(GpuOptions(model_dir=folder, steps=1))
    for index, block in enumerate(attn1_blocks(loaded.unet)):
        for name, parameter in block.named_parameters():  # type: ignore[attr-defined]
            assert torch.all(parameter == index + 1), (index, name)
    # the same tensors under their other upstream names (a file saved without deduplication)
    aliases = {f"{8 * i + 1}.weight": tensors[f"{8 * i}.to_q.weight"] for i in range(len(blocks))}
    aliases |= {f"{8 * i + 5}.bias": tensors[f"{8 * i}.to_out.0.bias"] for i in range(len(blocks))}
    renamed = {k: v for k, v in tensors.items() if not k.endswith(("to_q.weight", "to_out.0.bias"))}
    save_file(renamed | aliases, str(folder / ATTENTION_FILE))
    again = CatVTONGenerator(GpuOptions(model_dir=folder, steps=1))
    assert torch.all(attn1_blocks(again.unet)[1].to_q.weight == 2)  # type: ignore[attr-defined]
    assert torch.all(attn1_blocks(again.unet)[2].to_out[0].bias == 3)  # type: ignore[attr-defined]


def test_refuses_the_seven_slot_numbering_and_partial_files(model_dir: Path, tmp_path: Path) -> None:
    saved = load_file(str(model_dir / ATTENTION_FILE))
    folder = tmp_path / "seven"
    shutil.copytree(model_dir, folder)
    # diffusers' built-in processor is no module: 7 slots a block, the numbering upstream's file has not
    seven = {f"{int(k.split('.', 1)[0]) // 8 * 7}.{k.split('.', 1)[1]}": v for k, v in saved.items()}
    save_file(seven, str(folder / ATTENTION_FILE))
    with pytest.raises(
        BackendUnavailableError, match=r"unexpected: 7\.to_k\.weight.*missing: 8\.to_k\.weight"
    ):
        CatVTONGenerator(GpuOptions(model_dir=folder))
    save_file({k: v for k, v in saved.items() if k != "16.to_v.weight"}, str(folder / ATTENTION_FILE))
    with pytest.raises(BackendUnavailableError, match=r"missing: 16\.to_v\.weight"):
        CatVTONGenerator(GpuOptions(model_dir=folder))
    wrong = dict(saved) | {"8.to_q.weight": torch.zeros(3, 3)}
    save_file(wrong, str(folder / ATTENTION_FILE))
    with pytest.raises(BackendUnavailableError, match=r"wrong shape: 8\.to_q\.weight \(3, 3\)"):
        CatVTONGenerator(GpuOptions(model_dir=folder))


def test_loads_the_written_weights_and_skips_cross_attention(model_dir: Path) -> None:
    loaded = CatVTONGenerator(GpuOptions(model_dir=model_dir, steps=1))
    saved = load_file(str(model_dir / ATTENTION_FILE))
    assert torch.equal(attn1_blocks(loaded.unet)[1].to_v.weight, saved["8.to_v.weight"])  # type: ignore[attr-defined]
    fresh = attn1_blocks(catvton_components(seed=99)["unet"])[1]
    assert not torch.equal(fresh.to_v.weight, saved["8.to_v.weight"])  # type: ignore[attr-defined]
    skipped = [name for name in loaded.unet.attn_processors if "attn2" in name]
    assert skipped and all(
        type(loaded.unet.attn_processors[n]).__name__ == "SkipAttnProcessor" for n in skipped
    )


# --- generation --------------------------------------------------------------------------------


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


def test_concurrent_jobs_run_one_denoising_loop_at_a_time(
    model_dir: Path, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    """Worker threads share one generator (``vto worker --concurrency N``, batch 1): the
    scheduler is shared state, so the UNet never runs for two jobs at once."""
    backend = CatVTONGenerator(GpuOptions(model_dir=model_dir, steps=1, guidance=1.0))
    probe = OverlapProbe(backend.unet)
    backend.unet = probe
    requests = [
        image_request(astronaut_png, (top(tshirt_png),), width=64, height=64, seed=seed) for seed in range(3)
    ]
    results = run_concurrently([lambda r=r: backend.generate(r) for r in requests])
    assert probe.calls == 3 and probe.most == 1
    assert all(len(result.outputs) == 1 for result in results)
    backend.close()


def test_model_offload_gives_the_same_images(
    model_dir: Path, astronaut_png: bytes, tshirt_png: bytes
) -> None:
    request = image_request(astronaut_png, (top(tshirt_png),), width=64, height=64, seed=2)
    plain = CatVTONGenerator(GpuOptions(model_dir=model_dir, steps=1, device="cpu"))
    offloaded = CatVTONGenerator(
        GpuOptions(model_dir=model_dir, steps=1, device="cpu", offload="model", vae_tiling=True)
    )
    assert offloaded.offload and offloaded.vae.use_tiling
    assert plain.generate(request).outputs[0].data == offloaded.generate(request).outputs[0].data


# --- masks -------------------------------------------------------------------------------------


def _standing(width: int = 200, height: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks of a person standing with the arms down, all seen."""
    points = np.zeros((33, 2), np.float32)
    joints = {
        0: (100, 40),
        11: (130, 90),
        12: (70, 90),
        13: (140, 150),
        14: (60, 150),
        15: (145, 205),
        16: (55, 205),
        23: (120, 210),
        24: (80, 210),
        25: (122, 290),
        26: (78, 290),
        27: (124, 370),
        28: (76, 370),
    }
    for index, (x, y) in joints.items():
        points[index] = (x, y)
    return points, np.ones(33, np.float32)


def test_a_top_covers_the_arms_down_to_the_wrists_for_long_sleeves() -> None:
    points, seen = _standing()
    upper = np.asarray(pose_mask((200, 400), points, seen, GarmentCategory.TOP)) > 0
    for wrist in (15, 16):
        x, y = points[wrist].astype(int)
        assert upper[y, x], "the forearm is repainted: a long sleeve fits"
    x, y = ((points[13] + points[15]) / 2).astype(int)
    assert upper[y, x]
    assert not upper[int(points[0][1]), int(points[0][0])]  # the head is kept
    assert not upper[int(points[27][1]), int(points[27][0])]  # so are the ankles
    bottom = np.asarray(pose_mask((200, 400), points, seen, GarmentCategory.BOTTOM)) > 0
    assert bottom[int(points[27][1]), int(points[27][0])]  # the ankles
    assert not bottom[int(points[13][1]), int(points[13][0])]  # not the elbows
    dress = np.asarray(pose_mask((200, 400), points, seen, GarmentCategory.DRESS)) > 0
    assert dress.sum() > upper.sum() and dress[int(points[25][1]), int(points[25][0])]
    outer = np.asarray(pose_mask((200, 400), points, seen, GarmentCategory.OUTER)) > 0
    assert outer.sum() > upper.sum()


def test_unseen_forearms_are_not_guessed_and_no_body_means_the_box() -> None:
    points, seen = _standing()
    seen[[15, 16]] = 0.0  # wrists out of the picture
    upper = np.asarray(pose_mask((200, 400), points, seen, GarmentCategory.TOP)) > 0
    assert upper[150, 140] and not upper[225, 145]
    seen[:] = 0.0
    assert pose_mask((200, 400), points, seen, GarmentCategory.TOP) is None


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
