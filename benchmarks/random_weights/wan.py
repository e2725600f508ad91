"""Random-weight Wan 2.x image-to-video pipelines in the published diffusers layout.

Nothing is downloaded: every component is built from its config with random weights, and the
tokenizer is a small word-level one made with the ``tokenizers`` library. Two scales:

* ``scale="tiny"``: a few thousand parameters per component, saved to a directory in the
  layout the published ``Wan-AI/Wan2.x-...-Diffusers`` repositories use (``model_index.json``,
  ``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``, plus
  ``image_encoder/`` and ``image_processor/`` for Wan 2.1 I2V, ``transformer_2/`` for A14B).
  Loads and runs on a CPU in seconds; the tests load it through
  :class:`~generator_worker.generation.wan_video.WanVideoGenerator`.
* ``scale="full"``: the published full-size configuration, built directly on the device in
  bf16 (no CPU initialisation of billions of parameters) and returned as an in-memory
  pipeline (the GPU benchmark); writing it to disk is possible but not needed.

Variants (``variant=``): ``"wan2.2-ti2v-5b"`` (Wan2.2-TI2V-5B: one 5B transformer, the Wan 2.2
VAE with 16x spatial compression, ``expand_timesteps``; the published repository's pipeline
class is ``WanPipeline``, which :class:`WanImageToVideoPipeline` loads),
``"wan2.1-i2v-14b-480p"`` (Wan2.1-I2V-14B-480P: 14B transformer with image cross-attention,
CLIP ViT-H/14 image encoder) and ``"wan2.2-i2v-a14b"`` (Wan2.2-I2V-A14B: two 14B transformers
without image cross-attention, the high-noise one until ``boundary_ratio`` 0.9, the Wan 2.1
VAE, no image encoder).

Imports: torch, diffusers, transformers, tokenizers (lazily, inside the functions). For tests and
benchmarks only (``benchmarks/random_weights``): the application never imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

VARIANTS = ("wan2.2-ti2v-5b", "wan2.1-i2v-14b-480p", "wan2.2-i2v-a14b")
SCALES = ("tiny", "full")

# The published configs (diffusers' conversion script and the Wan-AI/*-Diffusers repositories).
_UMT5_XXL: dict[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
}
_TRANSFORMER_FULL: dict[str, dict[str, Any]] = {
    "wan2.2-ti2v-5b": {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 24,
        "attention_head_dim": 128,
        "in_channels": 48,
        "out_channels": 48,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": 14336,
        "num_layers": 30,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": None,
        "added_kv_proj_dim": None,
        "rope_max_seq_len": 1024,
    },
    "wan2.1-i2v-14b-480p": {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 40,
        "attention_head_dim": 128,
        "in_channels": 36,
        "out_channels": 16,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": 13824,
        "num_layers": 40,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": 1280,
        "added_kv_proj_dim": 5120,
        "rope_max_seq_len": 1024,
    },
}
_VAE_22: dict[str, Any] = {
    "base_dim": 160,
    "decoder_base_dim": 256,
    "z_dim": 48,
    "in_channels": 12,
    "out_channels": 12,
    "is_residual": True,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
    # the published statistics matter only for real weights; neutral ones keep the shape
    "latents_mean": [0.0] * 48,
    "latents_std": [1.0] * 48,
}
_CLIP_VIT_H_14: dict[str, Any] = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 224,
    "projection_dim": 1024,
    "hidden_act": "gelu",
}
_TRANSFORMER_FULL["wan2.2-i2v-a14b"] = {  # each of its two transformers: 2.1's, without image input
    **_TRANSFORMER_FULL["wan2.1-i2v-14b-480p"],
    "image_dim": None,
    "added_kv_proj_dim": None,
}
_FLOW_SHIFT = {"wan2.2-ti2v-5b": 5.0, "wan2.1-i2v-14b-480p": 3.0, "wan2.2-i2v-a14b": 5.0}
A14B_BOUNDARY_RATIO = 0.9  # Wan2.2 wan/configs/wan_i2v_A14B.py: boundary 0.900

TOKENIZER_WORDS = (
    "a",
    "person",
    "wearing",
    "the",
    "garment",
    "turning",
    "slowly",
    "fashion",
    "lookbook",
    "studio",
    "light",
    "walking",
    "model",
    "dress",
    "shirt",
    "jacket",
    "pants",
    "skirt",
    "smooth",
    "camera",
    "motion",
    "static",
    "blurry",
    "low",
    "quality",
)
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"  # T5's special tokens


def build_tokenizer() -> Any:
    """A small word-level tokenizer with T5's special tokens, made locally (no download)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for word in TOKENIZER_WORDS:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def _components(variant: str, scale: str, vocab_size: int) -> dict[str, Any]:
    """Every component of the pipeline, built in the current default device and dtype."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        UMT5Config,
        UMT5EncoderModel,
    )

    wan21 = variant == "wan2.1-i2v-14b-480p"
    a14b = variant == "wan2.2-i2v-a14b"
    vae21 = wan21 or a14b  # A14B uses the Wan 2.1 VAE
    if scale == "full":
        text_config = UMT5Config(**_UMT5_XXL)
        transformer_config = dict(_TRANSFORMER_FULL[variant])
        vae_config: dict[str, Any] = {} if vae21 else dict(_VAE_22)  # 2.1: the default is the published
        clip_config = dict(_CLIP_VIT_H_14)
    else:
        text_config = UMT5Config(
            vocab_size=vocab_size,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,  # type: ignore[call-arg] # a PretrainedConfig keyword
        )
        transformer_config = {
            "patch_size": (1, 2, 2),
            "num_attention_heads": 2,
            "attention_head_dim": 12,
            "in_channels": 36 if vae21 else 48,
            "out_channels": 16 if vae21 else 48,
            "text_dim": 32,
            "freq_dim": 256,
            "ffn_dim": 32,
            "num_layers": 2,
            "cross_attn_norm": True,
            "qk_norm": "rms_norm_across_heads",
            "rope_max_seq_len": 32,
            "image_dim": 32 if wan21 else None,
            "added_kv_proj_dim": 24 if wan21 else None,
        }
        vae_config = {"base_dim": 3, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1}
        if not vae21:
            vae_config.update(
                z_dim=48,
                in_channels=12,
                out_channels=12,
                is_residual=True,
                patch_size=2,
                scale_factor_spatial=16,
                scale_factor_temporal=4,
                latents_mean=[0.0] * 48,
                latents_std=[1.0] * 48,
            )
        clip_config = {
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "patch_size": 4,
            "image_size": 32,
            "projection_dim": 32,
        }
    components: dict[str, Any] = {
        "transformer": WanTransformer3DModel(**transformer_config),
        "vae": AutoencoderKLWan(**vae_config),
        "text_encoder": UMT5EncoderModel(text_config),
    }
    if a14b:
        components["transformer_2"] = WanTransformer3DModel(**transformer_config)
    if wan21:
        components["image_encoder"] = CLIPVisionModel(CLIPVisionConfig(**clip_config))
        side = clip_config["image_size"]
        components["image_processor"] = CLIPImageProcessor(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}
        )
    return components


def build_pipeline(
    variant: str = "wan2.2-ti2v-5b",
    scale: str = "tiny",
    *,
    device: str = "cpu",
    dtype: Any = None,
    seed: int = 0,
    image_to_video: bool = False,
) -> Any:
    """A random-weight pipeline in memory: ``WanPipeline`` for Wan2.2-TI2V-5B (as published;
    ``image_to_video=True``: the ``WanImageToVideoPipeline`` of the same components, what the
    backend runs), ``WanImageToVideoPipeline`` for Wan 2.1 I2V. Built directly on ``device`` in
    ``dtype`` (default: bf16 on CUDA, fp32 on CPU), with parameters created there, not copied;
    the VAE and the image encoder in fp32, as the backend loads them (``device="meta"``: shapes
    only, for counting)."""
    import torch
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline, WanPipeline

    if variant not in VARIANTS:
        raise ValueError(f"unknown Wan variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    if dtype is None:
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            components = _components(variant, scale, len(tokenizer))
    finally:
        torch.set_default_dtype(previous)
    for name in ("transformer", "transformer_2", "vae", "text_encoder", "image_encoder"):
        if name in components:
            components[name].eval().requires_grad_(False)
    # the precision diffusers' published Wan I2V example loads them in (and the backend does)
    for name in ("vae", "image_encoder"):
        if name in components:
            components[name].to(torch.float32)
    components["tokenizer"] = tokenizer
    components["scheduler"] = UniPCMultistepScheduler(  # built on the CPU, whatever ``device``
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        num_train_timesteps=1000,
        flow_shift=_FLOW_SHIFT[variant],
    )
    if variant == "wan2.2-ti2v-5b":
        published = WanImageToVideoPipeline if image_to_video else WanPipeline
        return published(**components, expand_timesteps=True)
    if variant == "wan2.2-i2v-a14b":
        return WanImageToVideoPipeline(**components, boundary_ratio=A14B_BOUNDARY_RATIO)
    return WanImageToVideoPipeline(**components)


def write_random_wan(
    directory: Path | str,
    variant: str = "wan2.2-ti2v-5b",
    scale: str = "tiny",
    *,
    seed: int = 0,
) -> Path:
    """Save a random-weight pipeline to ``directory`` in the published layout (safetensors)."""
    pipeline = build_pipeline(variant, scale, seed=seed)
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(str(path), safe_serialization=True)
    return path
