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
    ``import torch`` (after checking that diffusers and accelerate are installed), or raise
    :class:`BackendUnavailableError` explaining that the ``gpu`` extra is needed. accelerate is
    required: without it diffusers builds every model in fp32 in host memory before loading its
    weights (``low_cpu_mem_usage`` off), and model CPU offload needs it.

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
    ``guidance``, ``lora_path``, ``batch``, ``offload``, ``vae_tiling``, ``lora_scheduler``),
    filled from ``VTO_GPU_*`` by the registry. ``None`` steps or guidance mean the backend's own
    published default.

``place(pipeline, device, offload) -> None``
    Put a diffusers pipeline on ``device``: ``"none"`` moves it there, ``"model"`` installs
    diffusers' model CPU offload (each model moves to the device when it runs and back when
    the next one runs), ``"sequential"`` diffusers' sequential offload (layer by layer: the
    least memory, the slowest).

``merge_lora(model, path, *, scale=1.0) -> int``
    Fuse a LoRA safetensors file into ``model``'s Linear weights (W += scale * alpha/rank * B @ A)
    without peft. Keys ``<module>.lora_A.weight``/``lora_B.weight`` (PEFT, diffusers; also with
    PEFT's adapter name, ``lora_A.default.weight``) or ``<module>.lora_down.weight``/
    ``lora_up.weight`` (kohya, lightx2v); module names optionally prefixed ``transformer.``,
    ``diffusion_model.``, ``unet.``, ``model.`` or ``base_model.model.``, or kohya's flattened
    ``lora_unet_<module with dots as underscores>``. The alpha is a ``<module>.alpha`` tensor,
    or else diffusers' adapter metadata in the file's header (``lora_adapter_metadata``: PEFT's
    ``lora_alpha``, ``alpha_pattern``, ``use_rslora``), or else the rank (a factor of 1). Returns
    the number of modules merged; a missing or unreadable file, or keys that name no Linear of
    ``model``, raise ``BackendUnavailableError``.

``read_lora(path) -> (tensors, metadata)``
    A LoRA file's tensors and diffusers' adapter metadata from its header (None when absent).

``is_out_of_memory(error) -> bool``
    True for ``torch.cuda.OutOfMemoryError`` and the allocator's "out of memory" RuntimeErrors,
    so a backend can turn them into a retryable ``ResourceError``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
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
            "the GPU generators need torch, diffusers, transformers and accelerate (the 'gpu' extra: "
            f"uv sync --extra gpu): {error}"
        ) from error
    if importlib.util.find_spec("accelerate") is None:
        raise BackendUnavailableError(
            "the GPU generators need accelerate (in the 'gpu' extra: uv sync --extra gpu): without it "
            "diffusers builds each model in fp32 in host memory before loading its weights"
        )
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


OFFLOADS = ("none", "model", "sequential")


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
    offload: str = "none"  # one of OFFLOADS
    vae_tiling: bool = False
    lora_scheduler: str = "auto"  # auto, lightning or base (qwen-image-edit)

    def __post_init__(self) -> None:
        if self.offload not in OFFLOADS:
            raise BackendUnavailableError(f"unknown offload {self.offload!r}; choose {', '.join(OFFLOADS)}")


def place(pipeline: Any, device: str, offload: str) -> None:
    """Put ``pipeline`` on ``device``, or install diffusers' CPU offload (see the module docstring)."""
    if offload == "none":
        pipeline.to(device)
    elif offload == "model":
        pipeline.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipeline.enable_sequential_cpu_offload(device=device)
    else:
        raise BackendUnavailableError(f"unknown offload {offload!r}; choose {', '.join(OFFLOADS)}")


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
_KOHYA_PREFIX = "lora_unet_"
# diffusers' LoRA adapter metadata: PEFT ``LoraConfig`` fields as JSON in the safetensors header
# (diffusers ``loaders/lora_base.py``: ``LORA_ADAPTER_METADATA_KEY``)
LORA_METADATA_KEY = "lora_adapter_metadata"


def read_lora(path: Path | str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The tensors of a LoRA safetensors file and diffusers' adapter metadata from its header
    (None when absent); ``BackendUnavailableError`` for a missing or unreadable file."""
    from safetensors import SafetensorError, safe_open

    lora_path = Path(path)
    if not lora_path.is_file():
        raise BackendUnavailableError(f"LoRA file {lora_path} (VTO_GPU_LORA_PATH) does not exist")
    try:
        with safe_open(str(lora_path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
        raw = header.get(LORA_METADATA_KEY)
        metadata = json.loads(raw) if raw else None
    except (OSError, ValueError, SafetensorError) as error:
        raise BackendUnavailableError(
            f"LoRA file {lora_path} is not a readable safetensors file: {error}"
        ) from error
    if metadata is not None and not isinstance(metadata, dict):
        raise BackendUnavailableError(f"LoRA file {lora_path}: {LORA_METADATA_KEY} is not a JSON object")
    return tensors, metadata


def _normalise_lora_key(key: str) -> str:
    """PEFT saves ``lora_A.<adapter>.weight`` when an adapter name is kept; diffusers drops
    ``default.`` (``_convert_non_diffusers_qwen_lora_to_diffusers``), and so do we."""
    return key.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")


def _lora_target(stem: str, names: set[str], flattened: dict[str, str | None]) -> str | None:
    for prefix in ("", *_LORA_PREFIXES):
        if stem.startswith(prefix) and stem[len(prefix) :] in names:
            return stem[len(prefix) :]
    if stem.startswith(_KOHYA_PREFIX):
        # kohya writes ``lora_unet_`` + the module's qualified name with dots as underscores:
        # the inverse is a lookup of the model's own names written the same way (None where
        # two names flatten alike: ambiguous, so refused)
        return flattened.get(stem[len(_KOHYA_PREFIX) :])
    return None


def _pattern_value(patterns: Any, name: str) -> Any:
    """PEFT's per-module override (``alpha_pattern``/``rank_pattern``): a key starting with
    ``^`` is a regular expression matched from the start of the module name, any other key
    matches the name or a dotted suffix of it (peft ``utils/other.py``: ``get_pattern_key``)."""
    if not isinstance(patterns, dict):
        return None
    for pattern, value in patterns.items():
        regex = pattern if pattern.startswith("^") else rf"(.*\.)?({pattern})$"
        if re.match(regex, name):
            return value
    return None


def _metadata_factor(metadata: dict[str, Any] | None, name: str, rank: int) -> float:
    """alpha / rank from diffusers' adapter metadata (PEFT's ``LoraLayer`` scaling;
    ``use_rslora``: alpha / sqrt(rank)); 1 without metadata."""
    if not metadata:
        return 1.0
    alpha = _pattern_value(metadata.get("alpha_pattern"), name)
    if alpha is None:
        alpha = metadata.get("lora_alpha", metadata.get("r", rank))
    # the rank is the weights' own (a file whose ranks disagree with its metadata would not
    # load in PEFT either)
    divisor = math.sqrt(rank) if metadata.get("use_rslora") else rank
    return float(alpha) / divisor


def merge_lora(model: Any, path: Path | str, *, scale: float = 1.0) -> int:
    """Fuse the LoRA at ``path`` into ``model`` (see the module docstring)."""
    torch = import_torch()
    lora_path = Path(path)
    raw, metadata = read_lora(lora_path)
    tensors = {_normalise_lora_key(key): value for key, value in raw.items()}
    linears = {name: module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    names = set(linears)
    flattened: dict[str, str | None] = {}
    for name in names:
        flat = name.replace(".", "_")
        flattened[flat] = None if flat in flattened else name
    merged = 0
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
            target = _lora_target(stem, names, flattened)
            if target is None:
                unknown.append(stem)
                break
            down, up = tensors[key].float(), tensors[up_key].float()
            rank = down.shape[0]
            alpha = tensors.get(stem + ".alpha")
            factor = scale * (float(alpha) / rank if alpha is not None else 1.0)
            factor *= _metadata_factor(metadata, target, rank)
            weight = linears[target].weight
            delta = (up.flatten(1) @ down.flatten(1)) * factor
            if delta.shape != weight.shape:
                raise BackendUnavailableError(
                    f"LoRA {lora_path}: {stem} is {tuple(delta.shape)}, the model's {target} is "
                    f"{tuple(weight.shape)}: the LoRA is for another model"
                )
            with torch.no_grad():
                weight.add_(delta.to(weight.device, weight.dtype))
            merged += 1
            break
    if unknown or merged == 0:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise BackendUnavailableError(
            f"LoRA {lora_path} does not fit this model: "
            + (f"no Linear layer for {shown}" if unknown else "no lora_A/lora_B or lora_down/lora_up keys")
        )
    return merged
