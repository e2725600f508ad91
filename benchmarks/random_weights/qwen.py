"""Random-weight Qwen-Image-Edit-Plus pipelines in the published layout, for tests and benchmarks.

Nothing is downloaded: every component is built from a config written here (the tokenizer with
the ``tokenizers`` library: a byte-level BPE without merges plus Qwen's special tokens), so the
outputs are noise, but the shapes, layout and compute match the published model at
``scale="full"``. Imports only torch, transformers, diffusers, tokenizers and numpy (lazily).

API
---

``qwen_image_edit_pipeline(scale="tiny", *, device="cpu", dtype=None, seed=0)``
    An in-memory ``diffusers.QwenImageEditPlusPipeline`` with random weights.
    ``scale="tiny"``: a few hundred thousand parameters, builds in about a second on CPU.
    ``scale="full"``: the published Qwen-Image-Edit-2509 configuration (a 20B MMDiT transformer,
    the Qwen2.5-VL-7B text encoder, the Qwen-Image VAE; about 58 GB in bf16): the modules are
    constructed directly on ``device`` (e.g. ``"cuda"``) in ``dtype`` (default bf16 on CUDA,
    fp32 on CPU) under ``torch.device(device)``, so nothing is materialised on the CPU first.
    Pass it to ``QwenImageEditGenerator.from_pipeline`` to benchmark the backend without disk.

``write_qwen_image_edit(model_dir, scale="tiny", *, seed=0) -> Path``
    ``qwen_image_edit_pipeline(scale, device="cpu")`` saved with ``save_pretrained`` into
    ``model_dir`` (the published layout: ``model_index.json``, ``transformer/``, ``vae/``,
    ``text_encoder/``, ``tokenizer/``, ``processor/``, ``scheduler/``), loadable by
    ``QwenImageEditGenerator``. Meant for ``tiny`` (the full model needs ~58 GB of disk).

``write_lora(path, pipeline, rank=4, *, seed=0, prefix="transformer.", style="peft", alpha=None)``
    A random LoRA file for every attention projection of the pipeline's transformer; returns
    the target module names. ``style="peft"``: ``<prefix><module>.lora_A.weight``/``lora_B``
    keys, with ``alpha`` (when given) in diffusers' adapter metadata (``lora_adapter_metadata``
    in the header: ``{"r": rank, "lora_alpha": alpha}``); ``style="kohya"``:
    ``lora_unet_<module with dots as underscores>.lora_down.weight``/``lora_up`` with an
    ``.alpha`` tensor when ``alpha`` is given. Exercises ``VTO_GPU_LORA_PATH``.

The byte-level tokenizer makes prompts 3-4x longer in tokens than Qwen's real BPE vocabulary,
which makes the text encoder slightly slower than the real one at ``full``. ``device="meta"``
builds shapes only (parameter counts for the memory table). For tests and benchmarks only
(``benchmarks/random_weights``): the application never imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

Scale = Literal["tiny", "full"]

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
FULL_FIRST_SPECIAL_ID = 151643  # where Qwen2.5's special tokens start
FULL_VOCAB_SIZE = 152064


def _tokenizer(scale: Scale) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2Tokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    if scale == "full":  # unreachable fillers, so the special tokens get their published ids
        vocab.update({f"<|filler_{i}|>": i for i in range(len(vocab), FULL_FIRST_SPECIAL_ID)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS]
    )
    return Qwen2Tokenizer(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )


def _processor(tokenizer: Any, scale: Scale) -> Any:
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    if scale == "full":
        image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    else:  # 64 patches a picture at most: keeps the tiny vision tower cheap
        image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112)
    return Qwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor()
    )


def _text_config(scale: Scale, tokenizer: Any) -> Any:
    from transformers import Qwen2_5_VLConfig

    ids = {
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
    }
    special = {
        "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
    }
    if scale == "full":  # Qwen2.5-VL-7B-Instruct
        text = {
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_position_embeddings": 128000,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "rope_scaling": {"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"},
            "vocab_size": FULL_VOCAB_SIZE,
            **special,
        }
        vision = {
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 3584,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "tokens_per_second": 2,
        }
        hidden, vocab_size = 3584, FULL_VOCAB_SIZE
    else:
        text = {
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_theta": 1000000.0,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "vocab_size": len(tokenizer),
            **special,
        }
        vision = {
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
        }
        hidden, vocab_size = 16, len(tokenizer)
    config_class: Any = Qwen2_5_VLConfig
    return config_class(
        text_config=text, vision_config=vision, hidden_size=hidden, vocab_size=vocab_size, **ids, **special
    )


def qwen_image_edit_pipeline(
    scale: Scale = "tiny", *, device: str = "cpu", dtype: Any = None, seed: int = 0
) -> Any:
    """A random-weight ``QwenImageEditPlusPipeline`` (see the module docstring)."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPlusPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLForConditionalGeneration

    if dtype is None:
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    tokenizer = _tokenizer(scale)
    processor = _processor(tokenizer, scale)
    config = _text_config(scale, tokenizer)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    transformer: Any
    vae: Any
    text_encoder: Any
    try:
        with torch.device(device):
            if scale == "full":  # Qwen-Image-Edit-2509's published configs
                transformer = QwenImageTransformer2DModel()
                vae = AutoencoderKLQwenImage()
            else:
                transformer = QwenImageTransformer2DModel(
                    patch_size=2,
                    in_channels=16,
                    out_channels=4,
                    num_layers=2,
                    attention_head_dim=16,
                    num_attention_heads=2,
                    joint_attention_dim=16,
                    axes_dims_rope=(8, 4, 4),
                )
                vae = AutoencoderKLQwenImage(
                    base_dim=8,
                    z_dim=4,
                    dim_mult=[1, 2, 2],
                    num_res_blocks=1,
                    temperal_downsample=[False, True],
                    latents_mean=[0.0] * 4,
                    latents_std=[1.0] * 4,
                )
            text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256,
        base_shift=0.5,
        max_image_seq_len=8192,
        max_shift=0.9,
        shift=1.0,
        shift_terminal=0.02,
        use_dynamic_shifting=True,
        time_shift_type="exponential",
    )
    pipeline: Any = QwenImageEditPlusPipeline(
        scheduler=scheduler,
        vae=vae.to(device, dtype).eval(),
        text_encoder=text_encoder.to(device, dtype).eval(),
        tokenizer=tokenizer,
        processor=processor,
        transformer=transformer.to(device, dtype).eval(),
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def write_qwen_image_edit(model_dir: Path | str, scale: Scale = "tiny", *, seed: int = 0) -> Path:
    """Save a random pipeline in the published layout (see the module docstring)."""
    target = Path(model_dir)
    qwen_image_edit_pipeline(scale, device="cpu", seed=seed).save_pretrained(target, safe_serialization=True)
    return target


def write_lora(
    path: Path | str,
    pipeline: Any,
    rank: int = 4,
    *,
    seed: int = 0,
    prefix: str = "transformer.",
    style: str = "peft",
    alpha: float | None = None,
) -> list[str]:
    """A random LoRA for the transformer's attention projections (see the module docstring)."""
    import json

    import torch
    from safetensors.torch import save_file

    generator = torch.Generator("cpu").manual_seed(seed)
    tensors: dict[str, Any] = {}
    targets: list[str] = []
    for name, module in pipeline.transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v"):
            out_features, in_features = module.weight.shape
            down = torch.randn(rank, in_features, generator=generator)
            up = torch.randn(out_features, rank, generator=generator)
            if style == "kohya":
                stem = "lora_unet_" + name.replace(".", "_")
                tensors[f"{stem}.lora_down.weight"], tensors[f"{stem}.lora_up.weight"] = down, up
                if alpha is not None:
                    tensors[f"{stem}.alpha"] = torch.tensor(float(alpha))
            else:
                tensors[f"{prefix}{name}.lora_A.weight"], tensors[f"{prefix}{name}.lora_B.weight"] = down, up
            targets.append(name)
    metadata = None
    if style != "kohya" and alpha is not None:
        metadata = {"lora_adapter_metadata": json.dumps({"r": rank, "lora_alpha": alpha})}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return targets
