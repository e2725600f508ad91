"""Shared helpers for the GPU backends that load published pipelines from a local directory.

Nothing here downloads anything and nothing here imports torch at module import time: the GPU
modules (``qwen_edit``, ``catvton``, ``wan_video``) import this module and call
:func:`import_torch` when a backend is actually built. Only the standard library and
``generator_worker.generation.base`` are imported, so the module runs on a machine that has just
torch, transformers and diffusers (the GPU benchmark machine).

Stable API (other backends build on it):

``Need = str | tuple[str, ...]``
    One required entry of a layout: a path relative to the model directory, or a tuple of
    alternatives of which one must exist (e.g. a single ``.safetensors`` file or a sharded
    ``.safetensors.index.json``).

``weights(folder, stem="diffusion_pytorch_model") -> tuple[str, str]``
    The two accepted spellings of a folder's safetensors weights: ``folder/stem.safetensors``
    or ``folder/stem.safetensors.index.json`` (sharded; the shards it lists are checked too).

``missing_files(model_dir, required) -> list[str]``
    The entries of ``required`` absent from ``model_dir`` (alternatives joined by `` or ``), plus
    any shard named in a present ``*.index.json`` weight map that is absent. Empty when complete.
    A missing ``model_dir`` reports every entry.

``require_layout(model_dir, required, *, backend, env, hint="") -> Path``
    Raise :class:`BackendUnavailableError` naming the backend, the directory, the setting
    (``env``, e.g. ``VTO_GPU_MODEL_DIR``) and every missing file; otherwise return the
    directory as a ``Path``. ``model_dir=None`` is refused the same way.

``force_offline() -> None``
    Set ``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1`` and ``HF_DATASETS_OFFLINE=1`` (before
    huggingface_hub is imported where possible); every ``from_pretrained`` call must also pass
    ``local_files_only=True`` (:data:`LOCAL_ONLY`).

``import_torch() -> module``
    ``import torch`` (and ``diffusers``), or raise :class:`BackendUnavailableError` explaining
    that the ``gpu`` extra is needed.

``resolve_device(device) -> str``
    ``None``/``"auto"``/``""`` -> ``"cuda"`` when available, else ``"cpu"``; anything else is
    returned as given (``"cuda:1"``, ``"cpu"``). ``"cuda*"`` without CUDA is refused.

``resolve_dtype(dtype, device) -> torch.dtype``
    ``None``/``"auto"`` -> bf16 on CUDA with bf16 support, fp16 on older CUDA, fp32 on CPU;
    ``"bf16"``/``"bfloat16"``, ``"fp16"``/``"float16"``, ``"fp32"``/``"float32"`` explicitly.
    Unknown names raise ``BackendUnavailableError``.

``dtype_kwarg(dtype) -> dict``
    ``{"dtype": dtype}`` for diffusers ``from_pretrained`` (``{"torch_dtype": ...}`` on diffusers
    releases that predate the rename), together with :data:`LOCAL_ONLY`.

``GpuOptions``
    The settings every GPU backend takes (``model_dir``, ``device``, ``dtype``, ``steps``,
    ``guidance``, ``lora_path``, ``batch``), filled from ``VTO_GPU_*`` by the registry. ``None``
    steps or guidance mean the backend's own published default.

``merge_lora(model, path, *, scale=1.0) -> int``
    Fuse a LoRA safetensors file into ``model``'s Linear weights (W += scale * alpha/rank * B @ A)
    without peft. Keys ``<module>.lora_A.weight``/``lora_B.weight`` (PEFT, diffusers) or
    ``<module>.lora_down.weight``/``lora_up.weight`` with optional ``<module>.alpha`` (kohya,
    lightx2v), module names optionally prefixed ``transformer.``, ``diffusion_model.``,
    ``unet.`` or ``model.``. Returns the number of modules merged; a missing file, or keys that
    name no Linear of ``model``, raise ``BackendUnavailableError``.

``is_out_of_memory(error) -> bool``
    True for ``torch.cuda.OutOfMemoryError`` and the allocator's "out of memory" RuntimeErrors,
    so a backend can turn them into a retryable ``ResourceError``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator_worker.generation.base import BackendUnavailableError

Need = str | tuple[str, ...]

LOCAL_ONLY: dict[str, Any] = {"local_files_only": True}

_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")

_DTYPES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
}


def weights(folder: str, stem: str = "diffusion_pytorch_model") -> tuple[str, str]:
    """A folder's weights: one safetensors file or a sharded index."""
    return (f"{folder}/{stem}.safetensors", f"{folder}/{stem}.safetensors.index.json")


def _shards_missing(model_dir: Path, index: str) -> list[str]:
    path = model_dir / index
    try:
        weight_map = json.loads(path.read_text()).get("weight_map", {})
    except (OSError, ValueError, AttributeError):
        return [f"{index} (unreadable)"]
    folder = Path(index).parent
    shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
    return [str(folder / shard) for shard in shards if not (model_dir / folder / shard).is_file()]


def missing_files(model_dir: Path | str, required: Iterable[Need]) -> list[str]:
    """The required entries absent from ``model_dir`` (see the module docstring)."""
    root = Path(model_dir)
    missing: list[str] = []
    for need in required:
        options = (need,) if isinstance(need, str) else tuple(need)
        present = [option for option in options if (root / option).exists()]
        if not present:
            missing.append(" or ".join(options))
            continue
        for option in present[:1]:
            if option.endswith(".index.json"):
                missing.extend(_shards_missing(root, option))
    return missing


def require_layout(
    model_dir: Path | str | None,
    required: Iterable[Need],
    *,
    backend: str,
    env: str,
    hint: str = "",
) -> Path:
    """The model directory, or ``BackendUnavailableError`` listing every missing file."""
    suffix = f" {hint}" if hint else ""
    if model_dir is None or str(model_dir) == "":
        raise BackendUnavailableError(
            f"the {backend} generator needs {env}: a local directory in the published layout; "
            f"nothing is downloaded.{suffix}"
        )
    root = Path(model_dir)
    missing = missing_files(root, required)
    if missing:
        raise BackendUnavailableError(
            f"the {backend} model directory {root} ({env}) is incomplete; missing: "
            f"{', '.join(missing)}. Nothing is downloaded.{suffix}"
        )
    return root


def force_offline() -> None:
    """Forbid hub access for this process (see the module docstring)."""
    for name in _OFFLINE_ENV:
        os.environ[name] = "1"
    try:  # huggingface_hub reads the variable once at import; tell an imported copy too
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    except (ImportError, AttributeError):  # pragma: no cover - depends on the installed version
        pass


def import_torch() -> Any:
    """``torch``, after checking diffusers is importable too; else ``BackendUnavailableError``."""
    force_offline()
    try:
        import diffusers  # noqa: F401
        import torch
    except ImportError as error:
        raise BackendUnavailableError(
            "the GPU generators need torch, diffusers and transformers (the 'gpu' extra: "
            f"uv sync --extra gpu): {error}"
        ) from error
    return torch


def resolve_device(device: str | None) -> str:
    """``cuda`` when available for ``None``/``auto``, else ``cpu``; explicit values are checked."""
    torch = import_torch()
    if device is None or device in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {device!r} asked for, but CUDA is not available")
    return device


def resolve_dtype(dtype: str | None, device: str) -> Any:
    """The torch dtype for ``dtype`` (``auto``, ``bf16``, ``fp16``, ``fp32``) on ``device``."""
    torch = import_torch()
    if dtype is None or dtype in ("", "auto"):
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    name = _DTYPES.get(dtype.lower())
    if name is None:
        raise BackendUnavailableError(f"unknown dtype {dtype!r}; choose auto, bf16, fp16 or fp32")
    return getattr(torch, name)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is the device running out of memory."""
    if type(error).__name__ == "OutOfMemoryError":
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


@dataclass(frozen=True)
class GpuOptions:
    """What every GPU backend is built from (see the module docstring)."""

    model_dir: Path | None
    device: str | None = None
    dtype: str | None = None
    steps: int | None = None
    guidance: float | None = None
    lora_path: Path | None = None
    batch: int = 1


def dtype_kwarg(dtype: Any) -> dict[str, Any]:
    """The dtype keyword this diffusers release's ``from_pretrained`` takes."""
    try:
        from diffusers.utils import deprecation_utils

        renamed = hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE")
    except ImportError:  # pragma: no cover - depends on the installed version
        renamed = False
    return {"dtype": dtype} if renamed else {"torch_dtype": dtype}


_LORA_PREFIXES = ("transformer.", "diffusion_model.", "unet.", "model.", "base_model.model.")
_LORA_PAIRS = ((".lora_A.weight", ".lora_B.weight"), (".lora_down.weight", ".lora_up.weight"))


def _lora_target(key: str, names: set[str]) -> str | None:
    for prefix in ("", *_LORA_PREFIXES):
        if key.startswith(prefix) and key[len(prefix) :] in names:
            return key[len(prefix) :]
    return None


def merge_lora(model: Any, path: Path | str, *, scale: float = 1.0) -> int:
    """Fuse the LoRA at ``path`` into ``model`` (see the module docstring)."""
    torch = import_torch()
    from safetensors.torch import load_file

    lora_path = Path(path)
    if not lora_path.is_file():
        raise BackendUnavailableError(f"LoRA file {lora_path} (VTO_GPU_LORA_PATH) does not exist")
    tensors = load_file(str(lora_path))
    linears = {name: module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    names = set(linears)
    merged = 0
    used: set[str] = set()
    unknown: list[str] = []
    for key in sorted(tensors):
        for down_suffix, up_suffix in _LORA_PAIRS:
            if not key.endswith(down_suffix):
                continue
            stem = key[: -len(down_suffix)]
            up_key = stem + up_suffix
            if up_key not in tensors:
                unknown.append(key)
                break
            target = _lora_target(stem, names)
            if target is None:
                unknown.append(stem)
                break
            down, up = tensors[key].float(), tensors[up_key].float()
            rank = down.shape[0]
            alpha = tensors.get(stem + ".alpha")
            factor = scale * (float(alpha) / rank if alpha is not None else 1.0)
            weight = linears[target].weight
            delta = (up.flatten(1) @ down.flatten(1)) * factor
            if delta.shape != weight.shape:
                raise BackendUnavailableError(
                    f"LoRA {lora_path}: {stem} is {tuple(delta.shape)}, the model's {target} is "
                    f"{tuple(weight.shape)}: the LoRA is for another model"
                )
            with torch.no_grad():
                weight.add_(delta.to(weight.device, weight.dtype))
            used.update((key, up_key, stem + ".alpha"))
            merged += 1
            break
    if unknown or merged == 0:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise BackendUnavailableError(
            f"LoRA {lora_path} does not fit this model: "
            + (f"no Linear layer for {shown}" if unknown else "no lora_A/lora_B or lora_down/lora_up keys")
        )
    return merged
