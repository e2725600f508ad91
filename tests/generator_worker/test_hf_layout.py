"""The shared local-layout checks of the GPU backends (no torch needed except for the LoRA merge)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from generator_worker.generation import BackendUnavailableError
from generator_worker.generation.hf_layout import (
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
