"""The shared local-layout checks of the GPU backends (no torch needed except for the LoRA merge)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from generator_worker.generation import BackendUnavailableError
from generator_worker.generation.hf_layout import (
    GpuOptions,
    force_offline,
    is_out_of_memory,
    merge_lora,
    missing_files,
    require_layout,
    weights,
)

NEEDS = ("model_index.json", "vae/config.json", weights("vae"), weights("transformer"))


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_missing_files_lists_each_absent_entry_and_alternative(tmp_path: Path) -> None:
    _touch(tmp_path, "model_index.json", "vae/diffusion_pytorch_model.safetensors")
    assert missing_files(tmp_path, NEEDS) == [
        "vae/config.json",
        "transformer/diffusion_pytorch_model.safetensors or "
        "transformer/diffusion_pytorch_model.safetensors.index.json",
    ]
    _touch(tmp_path, "vae/config.json", "transformer/diffusion_pytorch_model.safetensors")
    assert missing_files(tmp_path, NEEDS) == []
    assert missing_files(tmp_path / "absent", ["a.json"]) == ["a.json"]


def test_sharded_index_requires_its_shards(tmp_path: Path) -> None:
    _touch(tmp_path, "transformer/diffusion_pytorch_model-00001-of-00002.safetensors")
    index = {
        "weight_map": {
            "a": "diffusion_pytorch_model-00001-of-00002.safetensors",
            "b": "diffusion_pytorch_model-00002-of-00002.safetensors",
        }
    }
    (tmp_path / "transformer/diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    assert missing_files(tmp_path, [weights("transformer")]) == [
        "transformer/diffusion_pytorch_model-00002-of-00002.safetensors"
    ]


def test_require_layout_refuses_with_the_setting_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="needs VTO_GPU_MODEL_DIR"):
        require_layout(None, NEEDS, backend="x", env="VTO_GPU_MODEL_DIR")
    _touch(tmp_path, "model_index.json")
    with pytest.raises(BackendUnavailableError, match=r"incomplete; missing: vae/config\.json, ") as info:
        require_layout(tmp_path, NEEDS, backend="x", env="VTO_GPU_MODEL_DIR")
    assert not info.value.retryable
    _touch(tmp_path, "vae/config.json", "vae/diffusion_pytorch_model.safetensors")
    _touch(tmp_path, "transformer/diffusion_pytorch_model.safetensors")
    assert require_layout(str(tmp_path), NEEDS, backend="x", env="E") == tmp_path


def test_force_offline_and_out_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    force_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_merge_lora_fuses_low_rank_updates_and_refuses_foreign_keys(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    before = model[0].weight.detach().clone()
    down, up = torch.randn(2, 4), torch.randn(3, 2)
    path = tmp_path / "lora.safetensors"
    safetensors_torch.save_file(
        {
            "diffusion_model.0.lora_down.weight": down,
            "diffusion_model.0.lora_up.weight": up,
            "diffusion_model.0.alpha": torch.tensor(1.0),
        },
        str(path),
    )
    assert merge_lora(model, path, scale=2.0) == 1
    assert torch.allclose(model[0].weight, before + 2.0 * 0.5 * up @ down, atol=1e-6)
    foreign = tmp_path / "foreign.safetensors"
    safetensors_torch.save_file({"blocks.9.lora_A.weight": down, "blocks.9.lora_B.weight": up}, str(foreign))
    with pytest.raises(BackendUnavailableError, match=r"no Linear layer for blocks\.9"):
        merge_lora(model, foreign)
    with pytest.raises(BackendUnavailableError, match="does not exist"):
        merge_lora(model, tmp_path / "absent.safetensors")


def _nested_model(torch: object) -> object:
    """Linears with dotted names (``blocks.0.attn.to_q``), as the transformers have."""
    nn = torch.nn  # type: ignore[attr-defined]
    torch.manual_seed(0)  # type: ignore[attr-defined]
    attn = nn.ModuleDict({"to_q": nn.Linear(4, 4), "to_k": nn.Linear(4, 4)})
    return nn.ModuleDict({"blocks": nn.ModuleList([nn.ModuleDict({"attn": attn})])})


def test_merge_lora_reads_the_alpha_from_diffusers_metadata(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model = _nested_model(torch)
    q = model["blocks"][0]["attn"]["to_q"]  # type: ignore[index]
    k = model["blocks"][0]["attn"]["to_k"]  # type: ignore[index]
    before_q, before_k = q.weight.detach().clone(), k.weight.detach().clone()
    down, up = torch.randn(2, 4), torch.randn(4, 2)
    path = tmp_path / "peft.safetensors"
    metadata = {"r": 2, "lora_alpha": 8, "alpha_pattern": {"to_k": 1}}
    safetensors_torch.save_file(
        {
            "transformer.blocks.0.attn.to_q.lora_A.weight": down,
            "transformer.blocks.0.attn.to_q.lora_B.weight": up,
            "transformer.blocks.0.attn.to_k.lora_A.default.weight": down.clone(),  # PEFT's adapter name
            "transformer.blocks.0.attn.to_k.lora_B.default.weight": up.clone(),
        },
        str(path),
        metadata={"lora_adapter_metadata": json.dumps(metadata)},
    )
    assert merge_lora(model, path) == 2
    assert torch.allclose(q.weight, before_q + (8 / 2) * up @ down, atol=1e-5)  # lora_alpha / r
    assert torch.allclose(k.weight, before_k + (1 / 2) * up @ down, atol=1e-5)  # alpha_pattern
    rs = tmp_path / "rslora.safetensors"
    safetensors_torch.save_file(
        {"blocks.0.attn.to_q.lora_A.weight": down, "blocks.0.attn.to_q.lora_B.weight": up},
        str(rs),
        metadata={"lora_adapter_metadata": json.dumps({"r": 2, "lora_alpha": 4, "use_rslora": True})},
    )
    merged_q = q.weight.detach().clone()
    merge_lora(model, rs)
    assert torch.allclose(q.weight, merged_q + (4 / 2**0.5) * up @ down, atol=1e-5)


def test_merge_lora_maps_kohya_lora_unet_names(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model = _nested_model(torch)
    q = model["blocks"][0]["attn"]["to_q"]  # type: ignore[index]
    before = q.weight.detach().clone()
    down, up = torch.randn(2, 4), torch.randn(4, 2)
    path = tmp_path / "kohya.safetensors"
    safetensors_torch.save_file(
        {
            "lora_unet_blocks_0_attn_to_q.lora_down.weight": down,
            "lora_unet_blocks_0_attn_to_q.lora_up.weight": up,
            "lora_unet_blocks_0_attn_to_q.alpha": torch.tensor(1.0),
        },
        str(path),
    )
    assert merge_lora(model, path) == 1
    assert torch.allclose(q.weight, before + 0.5 * up @ down, atol=1e-6)
    unknown = tmp_path / "unknown.safetensors"
    safetensors_torch.save_file(
        {"lora_unet_blocks_0_mlp_fc.lora_down.weight": down, "lora_unet_blocks_0_mlp_fc.lora_up.weight": up},
        str(unknown),
    )
    with pytest.raises(BackendUnavailableError, match=r"no Linear layer for lora_unet_blocks_0_mlp_fc"):
        merge_lora(model, unknown)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(BackendUnavailableError, match="not a readable safetensors file"):
        merge_lora(model, garbage)


def test_gpu_options_refuse_an_unknown_offload() -> None:
    with pytest.raises(BackendUnavailableError, match="unknown offload 'disk'"):
        GpuOptions(model_dir=None, offload="disk")
