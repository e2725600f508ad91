"""Random-weight CatVTON model directories in the published layout, for tests and benchmarks.

Nothing is downloaded: the SD-inpainting UNet, the VAE and the DDIM scheduler are built from
configs written here, and the CatVTON attention file holds the random self-attention weights of
that UNet written the way upstream wrote the published ``zhengchong/CatVTON`` file
(:func:`attention_state_dict`): every attention given a ``torch.nn.Module`` processor, every
module whose name contains ``attn1`` gathered into one ``ModuleList`` (8 modules a block), its
state dict with each shared tensor kept once under its first name (the names CatVTON issue 109
lists as missing from the published file are the ones dropped). This follows upstream's
procedure independently of the production loader (``generator_worker.generation.catvton``),
so a test comparing the two catches either drifting. Imports only torch, diffusers and
safetensors (lazily).

API
---

``catvton_components(scale="tiny", *, device="cpu", dtype=None, seed=0) -> dict``
    ``{"unet", "vae", "scheduler"}`` with random weights, in memory. ``scale="tiny"``: a few
    hundred thousand parameters, built in well under a second on CPU. ``scale="full"``: the
    published Stable Diffusion 1.5 inpainting UNet (860M parameters, 9 input channels) and the
    sd-vae-ft-mse VAE (84M), constructed directly on ``device`` in ``dtype`` (default bf16 on
    CUDA, fp32 on CPU) under ``torch.device(device)`` (``"meta"``: shapes only).

``attention_state_dict(unet) -> dict[str, Tensor]``
    The published attention file's tensors for ``unet`` (upstream's numbering, duplicates
    dropped), as contiguous copies. SD 1.5: 80 tensors, ``0.to_q.weight`` ... ``120.to_out.0.bias``.

``write_attention(unet, path) -> Path``
    :func:`attention_state_dict` saved as safetensors at ``path``.

``write_catvton(model_dir, scale="tiny", *, seed=0) -> Path``
    The components saved into ``model_dir`` in the published layout: ``unet/``, ``vae/``,
    ``scheduler/`` (``save_pretrained``) and ``mix-48k-1024/attention/model.safetensors``, loadable
    by ``CatVTONGenerator``. ``full`` writes about 3.8 GB (fp32) and takes a minute on CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

Scale = Literal["tiny", "full"]

ATTENTION_FILE = "mix-48k-1024/attention/model.safetensors"


def _module_processors(unet: Any) -> None:
    """Give every attention a processor that is a ``torch.nn.Module``, as upstream's
    ``init_adapter`` (model/utils.py) does before it gathers the trainable modules: the
    processor then counts among the modules (the 8th of each self-attention block)."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    class ModuleProcessor(torch.nn.Module):
        def __init__(self, cross: bool) -> None:
            super().__init__()
            self.cross = cross
            self.inner = AttnProcessor2_0()

        def __call__(self, attn: Any, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
            return hidden_states if self.cross else self.inner(attn, hidden_states, *args, **kwargs)

    # one instance per attention: a shared one would be listed once by named_modules
    unet.set_attn_processor(
        {name: ModuleProcessor(not name.endswith("attn1.processor")) for name in unet.attn_processors}
    )


def attention_state_dict(unet: Any) -> dict[str, Any]:
    """The published attention file's tensors for ``unet`` (see the module docstring). Leaves
    ``unet`` with upstream's module processors installed (the backend installs its own)."""
    import torch

    _module_processors(unet)
    trainable = torch.nn.ModuleList([module for name, module in unet.named_modules() if "attn1" in name])
    kept: dict[str, Any] = {}
    seen: set[int] = set()
    # the parameters themselves (keep_vars): a tensor shared by several names is one object;
    # the first name wins, as accelerate's save_model keeps the first of aliased names
    for key, parameter in trainable.state_dict(keep_vars=True).items():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        tensor = parameter.detach()
        kept[key] = tensor if tensor.device.type == "meta" else tensor.clone().contiguous()
    return kept


def write_attention(unet: Any, path: Path | str) -> Path:
    """:func:`attention_state_dict` saved as safetensors at ``path``."""
    from safetensors.torch import save_file

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.cpu() for key, value in attention_state_dict(unet).items()}, str(target))
    return target


def ddim_scheduler() -> Any:
    """Stable Diffusion 1.5 inpainting's published scheduler config."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def catvton_components(
    scale: Scale = "tiny", *, device: str = "cpu", dtype: Any = None, seed: int = 0
) -> dict[str, Any]:
    """Random UNet, VAE and scheduler (see the module docstring)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if dtype is None:
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    unet: Any
    vae: Any
    try:
        with torch.device(device):
            if scale == "full":
                unet = UNet2DConditionModel(
                    sample_size=64, in_channels=9, out_channels=4, cross_attention_dim=768
                )
                vae = AutoencoderKL(
                    in_channels=3,
                    out_channels=3,
                    latent_channels=4,
                    block_out_channels=(128, 256, 512, 512),
                    down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4,
                    layers_per_block=2,
                    sample_size=256,
                    scaling_factor=0.18215,
                )
            else:
                unet = UNet2DConditionModel(
                    sample_size=8,
                    in_channels=9,
                    out_channels=4,
                    block_out_channels=(16, 32),
                    layers_per_block=1,
                    norm_num_groups=8,
                    cross_attention_dim=16,
                    attention_head_dim=4,
                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                )
                vae = AutoencoderKL(
                    in_channels=3,
                    out_channels=3,
                    latent_channels=4,
                    block_out_channels=(8, 8, 8, 8),
                    down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4,
                    layers_per_block=1,
                    norm_num_groups=4,
                    sample_size=64,
                    scaling_factor=0.18215,
                )
    finally:
        torch.set_default_dtype(previous)
    return {
        "unet": unet.to(device, dtype).eval(),
        "vae": vae.to(device, dtype).eval(),
        "scheduler": ddim_scheduler(),
    }


def write_catvton(model_dir: Path | str, scale: Scale = "tiny", *, seed: int = 0) -> Path:
    """Save random components in the published layout (see the module docstring)."""
    target = Path(model_dir)
    components = catvton_components(scale, device="cpu", seed=seed)
    components["unet"].save_pretrained(target / "unet", safe_serialization=True)
    components["vae"].save_pretrained(target / "vae", safe_serialization=True)
    components["scheduler"].save_pretrained(target / "scheduler")
    write_attention(components["unet"], target / ATTENTION_FILE)
    return target
