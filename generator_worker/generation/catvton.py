"""The ``catvton`` backend: CatVTON (Chong et al., ICLR 2025, https://github.com/Zheng-Chong/CatVTON)
on a Stable Diffusion 1.5 inpainting base, loaded from a local directory (``local_files_only=True``,
``HF_HUB_OFFLINE=1``; nothing is downloaded).

Licences: CatVTON's code, checkpoints and demo are all CC BY-NC-SA 4.0 (the upstream README's
"License" section and LICENSE file): not for commercial use. This module re-implements the
published inference method (it does not copy upstream code), but it runs CatVTON's checkpoint,
so a deployment of this backend is bound by that licence. The SD 1.5 inpainting base is
CreativeML OpenRAIL-M; the sd-vae-ft-mse VAE upstream uses is MIT.

How it works (after upstream's ``model/pipeline.py``): the masked person and the garment are
encoded by the VAE and concatenated along the height in latent space (person above, garment
below), with the inpainting mask (zero over the garment half) and the noisy latents as the
UNet's 9 input channels. There is no text encoder: the UNet's cross-attention layers are skipped
(their processor returns its input, as CatVTON trained them) and its self-attention layers carry
CatVTON's trained weights. Classifier-free guidance drops the garment (zeros) in the
unconditional branch. The repainted region comes from the person's pose landmarks and the
garment's category when the mediapipe analyser is installed (upstream's ``cloth_masker.py``
regions: top and outer = torso, upper arms and forearms, so long sleeves can be drawn; bottom =
hips, thighs and legs; dress = all of them), else from a per-category box; the result is
blended back into the photo outside the mask. ``generate_batch`` runs up to ``VTO_GPU_BATCH``
outputs, across requests, through one denoising loop, one loop at a time per generator (a
lock: worker threads share the scheduler). Images only; one garment a request.

Required layout (``VTO_GPU_MODEL_DIR``)::

    unet/config.json, unet/diffusion_pytorch_model.safetensors      SD 1.5 inpainting UNet
    vae/config.json, vae/diffusion_pytorch_model.safetensors        its VAE (or sd-vae-ft-mse)
    scheduler/scheduler_config.json                                 DDIM
    mix-48k-1024/attention/model.safetensors                        CatVTON self-attention
      (or vitonhd-16k-512/... or dresscode-16k-512/...)

The attention file is read in upstream's numbering (:func:`attention_parameters`).

Imports only torch, diffusers, safetensors, PIL and numpy (lazily), ``base`` and its PIL-only
helpers; the pose analyser is optional.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from generator_worker.generation import hf_layout
from generator_worker.generation.base import (
    BackendInfo,
    BackendUnavailableError,
    GarmentCategory,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    Generator,
    JobKind,
    ResourceError,
)
from generator_worker.generation.gpu_images import cover, decode, image_result, pad, round_to

NAME = "catvton"
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 2.5
ETA = 1.0  # DDIM eta of the published inference code
SIZE_MULTIPLE = 8
ATTENTION_FILES = (
    "mix-48k-1024/attention/model.safetensors",
    "vitonhd-16k-512/attention/model.safetensors",
    "dresscode-16k-512/attention/model.safetensors",
)
LICENSE = (
    "CC BY-NC-SA 4.0 (CatVTON: code, checkpoints and demo; non-commercial); the SD 1.5 inpainting "
    "base is CreativeML OpenRAIL-M, the sd-vae-ft-mse VAE MIT"
)

REQUIRED: tuple[hf_layout.Need, ...] = (
    "unet/config.json",
    hf_layout.weights("unet"),
    "vae/config.json",
    hf_layout.weights("vae"),
    "scheduler/scheduler_config.json",
    ATTENTION_FILES,
)

CATVTON_INFO = BackendInfo(
    name=NAME,
    license=LICENSE,
    commercial_use=False,
    job_kinds=frozenset({JobKind.IMAGE}),
    categories=frozenset(GarmentCategory),
    needs_background=False,
    min_size=(64, 64),
    max_size=(1536, 1536),
    max_garments=1,
    max_outputs=4,
    requires_weights=True,
    notes="CatVTON from VTO_GPU_MODEL_DIR only (local_files_only, HF_HUB_OFFLINE=1); non-commercial.",
)

# --- the published attention file -------------------------------------------------------------
#
# Upstream (Zheng-Chong/CatVTON, model/pipeline.py ``CatVTONPipeline.__init__`` with
# model/utils.py ``init_adapter`` and ``get_trainable_module(unet, "attention")``) first gives
# every attention of the UNet a processor that is a ``torch.nn.Module`` (model/attn_processor.py:
# ``SkipAttnProcessor`` for cross-attention, ``AttnProcessor2_0`` for self-attention), then
# gathers every module whose qualified name contains "attn1" into one ``torch.nn.ModuleList``
# and reads the checkpoint into that list (accelerate's ``load_checkpoint_in_model``). Per
# self-attention block that list holds 8 modules, in this order:
#
#   +0 the Attention   +1 to_q   +2 to_k   +3 to_v   +4 to_out (ModuleList)   +5 to_out.0 (Linear)
#   +6 to_out.1 (Dropout)   +7 processor
#
# so the i-th self-attention's tensors are named "{8i}.to_q.weight", "{8i}.to_k.weight",
# "{8i}.to_v.weight", "{8i}.to_out.0.weight", "{8i}.to_out.0.bias", and the same tensors are
# reachable as "{8i+1}.weight", "{8i+4}.0.weight", "{8i+5}.bias" ... The published file keeps
# each shared tensor once, under its first name (CatVTON issue 109 lists the others as missing
# from it): 16 blocks x 5 tensors = 80 tensors, 49.57M parameters (the upstream README's
# "49.57M parameters trainable") on SD 1.5. The numbering is fixed by that file, not by the
# installed diffusers' module tree, so it is computed here from the block index; the blocks are
# taken in ``named_modules`` order (down blocks, up blocks, then the mid block), as upstream.
# The second names are accepted too (a file saved without deduplication loads as well).
ATTENTION_SLOTS = 8
_ALIASES = {1: "to_q.", 2: "to_k.", 3: "to_v.", 4: "to_out.", 5: "to_out.0."}


def self_attention_blocks(unet: Any) -> list[Any]:
    """The UNet's self-attention modules (``...attn1``) in upstream's order."""
    return [module for name, module in unet.named_modules() if name.split(".")[-1] == "attn1"]


def attention_parameters(unet: Any) -> dict[str, Any]:
    """The published attention file's key of every self-attention parameter of ``unet``:
    ``{"0.to_q.weight": <down_blocks.0...attn1.to_q.weight>, "8.to_q.weight": ..., ...}``."""
    return {
        f"{ATTENTION_SLOTS * index}.{name}": parameter
        for index, block in enumerate(self_attention_blocks(unet))
        for name, parameter in block.named_parameters()
    }


def published_key(key: str) -> str | None:
    """The first name of an attention file key (``"9.weight"`` -> ``"8.to_q.weight"``); None for
    a key that is not in upstream's numbering."""
    head, _, rest = key.partition(".")
    if not head.isdigit() or not rest:
        return None
    block, slot = divmod(int(head), ATTENTION_SLOTS)
    if slot == 0:
        return key
    prefix = _ALIASES.get(slot)
    return None if prefix is None else f"{block * ATTENTION_SLOTS}.{prefix}{rest}"


def load_attention(unet: Any, path: Path) -> None:
    """Put CatVTON's self-attention weights (``path``, upstream's numbering) into ``unet``;
    refuse a file that does not fill every self-attention parameter exactly."""
    from safetensors.torch import load_file

    params = attention_parameters(unet)
    tensors = load_file(str(path))
    unknown, mismatched = [], []
    filled: set[str] = set()
    for key in sorted(tensors, key=_numeric_order):
        value = tensors[key]
        name = published_key(key)
        if name is None or name not in params:
            unknown.append(key)
            continue
        target = params[name]
        if tuple(target.shape) != tuple(value.shape):
            mismatched.append(f"{key} {tuple(value.shape)} for {tuple(target.shape)}")
            continue
        target.data.copy_(value.to(target.device, target.dtype))
        filled.add(name)
    unset = sorted((key for key in params if key not in filled), key=_numeric_order)
    if unknown or unset or mismatched:
        problems = [
            f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
            for label, keys in (("unexpected", unknown), ("missing", unset), ("wrong shape", mismatched))
            if keys
        ]
        raise BackendUnavailableError(
            f"CatVTON attention weights {path} do not fit the UNet ({'; '.join(problems)}); "
            f"expected {len(params)} tensors numbered as upstream ({ATTENTION_SLOTS} slots a block)"
        )


def _numeric_order(key: str) -> tuple[int, str]:
    head, _, rest = key.partition(".")
    return (int(head), rest) if head.isdigit() else (-1, key)


def _skip_processor() -> Any:
    class SkipAttnProcessor:
        """CatVTON's cross-attention stand-in: returns its input unchanged."""

        def __call__(self, attn: Any, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
            return hidden_states

    return SkipAttnProcessor()


def _prepare_unet(unet: Any) -> Any:
    from diffusers.models.attention_processor import AttnProcessor2_0

    processors = {
        name: (AttnProcessor2_0() if name.endswith("attn1.processor") else _skip_processor())
        for name in unet.attn_processors
    }
    unet.set_attn_processor(processors)
    return unet


# --- masks ----------------------------------------------------------------------------------

# fractions of (width, height) repainted per category when no pose analyser is available; a
# top's box reaches the sides of the frame, where long sleeves hang
_BOXES = {
    GarmentCategory.TOP: (0.06, 0.16, 0.94, 0.66),
    GarmentCategory.OUTER: (0.04, 0.15, 0.96, 0.72),
    GarmentCategory.BOTTOM: (0.18, 0.45, 0.82, 0.98),
    GarmentCategory.DRESS: (0.06, 0.16, 0.94, 0.94),
}
# mediapipe pose landmarks: shoulders 11/12, elbows 13/14, wrists 15/16, hips 23/24, knees
# 25/26, ankles 27/28. The regions follow upstream's cloth masker (model/cloth_masker.py,
# ``dense_mask_parts``): upper = torso, big arms and forearms; lower = thighs and legs; overall =
# all of them; outer = torso and arms.
_TORSO = (11, 12, 24, 23)
_HIPS = (23, 24)
_ARMS = ((11, 13, 15), (12, 14, 16))
_LEGS = ((23, 25, 27), (24, 26, 28))
_PARTS: dict[GarmentCategory, tuple[str, ...]] = {
    GarmentCategory.TOP: ("torso", "arms"),
    GarmentCategory.OUTER: ("torso", "arms"),
    GarmentCategory.BOTTOM: ("hips", "legs"),
    GarmentCategory.DRESS: ("torso", "arms", "legs"),
}
_SEEN = 0.3  # landmark visibility taken as seen
# limb widths in shoulder spans: a loose sleeve, a trouser leg; an outer layer is wider still
_ARM_WIDTH = 0.42
_LEG_WIDTH = 0.55
_OUTER_WIDEN = 1.2


def pose_mask(
    size: tuple[int, int], points: np.ndarray, visibility: np.ndarray, category: GarmentCategory
) -> Image.Image | None:
    """The region to repaint (``L``, 255 inside) from pose landmarks; None when too few of the
    landmarks it needs were seen."""
    width, height = size
    seen = [bool(v > _SEEN) for v in visibility]
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    shoulders = seen[11] and seen[12]
    hips = seen[23] and seen[24]
    if shoulders:
        span = float(np.linalg.norm(points[11] - points[12]))
    elif hips:
        span = 1.4 * float(np.linalg.norm(points[23] - points[24]))
    else:
        return None
    widen = _OUTER_WIDEN if category is GarmentCategory.OUTER else 1.0
    drawn = False
    for part in _PARTS[category]:
        if part == "torso":
            corners = [tuple(points[i]) for i in _TORSO if seen[i]]
            if len(corners) >= 3:
                hull = _convex_hull(np.array(corners, np.float32))
                draw.polygon([(float(x), float(y)) for x, y in hull], fill=255)
                drawn = True
        elif part == "hips" and hips:
            _limb(draw, [points[i] for i in _HIPS], _LEG_WIDTH * span)
            drawn = True
        else:
            chains = _ARMS if part == "arms" else _LEGS
            limb_width = (_ARM_WIDTH if part == "arms" else _LEG_WIDTH) * span * widen
            for chain in chains:
                joints = []
                for index in chain:  # from the body outwards, up to the first joint not seen
                    if not seen[index]:
                        break
                    joints.append(points[index])
                if len(joints) >= 2:
                    _limb(draw, joints, limb_width)
    if not drawn:
        return None
    grow = max(3, (int(0.04 * max(width, height) * widen) // 2) * 2 + 1)
    return canvas.filter(ImageFilter.MaxFilter(min(grow, 31)))


def _limb(draw: ImageDraw.ImageDraw, joints: list[np.ndarray], width: float) -> None:
    """A capsule along ``joints``: thick segments with round joints and ends."""
    thickness = max(3, round(width))
    radius = thickness / 2
    points = [(float(x), float(y)) for x, y in joints]
    draw.line(points, fill=255, width=thickness, joint="curve")
    for x, y in points:
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)


@dataclass(frozen=True)
class _Job:
    request: GenerationRequest
    person: Image.Image
    garment: Image.Image
    mask: Image.Image  # "L", 255 where the garment goes


class CatVTONGenerator(Generator):
    """CatVTON; see the module docstring."""

    info = CATVTON_INFO

    def __init__(self, options: hf_layout.GpuOptions) -> None:
        model_dir = hf_layout.require_layout(
            options.model_dir,
            REQUIRED,
            backend=NAME,
            env="VTO_GPU_MODEL_DIR",
            hint="Download an SD 1.5 inpainting base (unet/, vae/, scheduler/) and zhengchong/CatVTON "
            "on a machine with internet and copy them here.",
        )
        if options.lora_path is not None:
            raise BackendUnavailableError("the catvton generator takes no LoRA (unset VTO_GPU_LORA_PATH)")
        torch = hf_layout.import_torch()
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

        device = hf_layout.resolve_device(options.device)
        dtype = hf_layout.resolve_dtype(options.dtype, device)
        load = {**hf_layout.LOCAL_ONLY, **hf_layout.dtype_kwarg(dtype)}
        try:
            unet = UNet2DConditionModel.from_pretrained(str(model_dir / "unet"), **load)
            vae = AutoencoderKL.from_pretrained(str(model_dir / "vae"), **load)
            scheduler = DDIMScheduler.from_pretrained(str(model_dir / "scheduler"), **hf_layout.LOCAL_ONLY)
        except (OSError, ValueError, KeyError) as error:
            raise BackendUnavailableError(
                f"the {NAME} model directory {model_dir} could not be loaded: {error}"
            ) from error
        if unet.config.in_channels != 9:
            raise BackendUnavailableError(
                f"{model_dir / 'unet'} has {unet.config.in_channels} input channels; CatVTON needs the "
                "9-channel Stable Diffusion inpainting UNet"
            )
        attention = next(model_dir / name for name in ATTENTION_FILES if (model_dir / name).is_file())
        _prepare_unet(unet)
        load_attention(unet, attention)
        offloaded = options.offload != "none"
        if not offloaded:
            unet, vae = unet.to(device), vae.to(device)
        self._setup(torch, unet, vae, scheduler, options, device, dtype)

    @classmethod
    def from_components(
        cls, unet: Any, vae: Any, scheduler: Any, options: hf_layout.GpuOptions | None = None
    ) -> CatVTONGenerator:
        """Wrap in-memory components (e.g. random weights built on the GPU for a benchmark); the
        UNet's cross-attention is switched off here, its self-attention weights are used as given."""
        options = options or hf_layout.GpuOptions(model_dir=None)
        torch = hf_layout.import_torch()
        generator = cls.__new__(cls)
        generator._setup(torch, _prepare_unet(unet), vae, scheduler, options, str(unet.device), unet.dtype)
        return generator

    def _setup(
        self,
        torch: Any,
        unet: Any,
        vae: Any,
        scheduler: Any,
        options: hf_layout.GpuOptions,
        device: str,
        dtype: Any,
    ) -> None:
        self._torch = torch
        self.unet = unet.eval()
        self.vae = vae.eval()
        if options.vae_tiling:
            self.vae.enable_tiling()
        self.scheduler = scheduler
        self.device = device
        self.dtype = dtype
        # "model" and "sequential" offload alike: each model waits in host memory and is on the
        # device only while it runs (CatVTON's UNet is 0.9B parameters: a layer-by-layer
        # offload would save little more)
        self.offload = options.offload != "none"
        self.steps = options.steps if options.steps is not None else DEFAULT_STEPS
        self.guidance = options.guidance if options.guidance is not None else DEFAULT_GUIDANCE
        self.batch = max(1, options.batch)
        # one denoising loop at a time: the scheduler's timesteps are shared state
        self._lock = threading.Lock()
        self._analyzer: Any = None
        try:  # optional: the mediapipe pose analyser shapes the mask
            from generator_worker.generation.pose import PersonAnalyzer

            self._analyzer = PersonAnalyzer()
        except ImportError:
            self._analyzer = None

    def close(self) -> None:
        if self._analyzer is not None:
            self._analyzer.close()
            self._analyzer = None
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()

    # --- masks ----------------------------------------------------------------------------

    def mask(self, person: Image.Image, category: GarmentCategory) -> Image.Image:
        """The region to repaint (``L``, 255 inside), from the pose when available."""
        width, height = person.size
        if self._analyzer is not None:
            points, visibility = self._analyzer.landmarks(np.asarray(person))
            drawn = pose_mask((width, height), points, visibility, category)
            if drawn is not None:
                return drawn
        canvas = Image.new("L", (width, height), 0)
        x0, y0, x1, y1 = _BOXES[category]
        ImageDraw.Draw(canvas).rectangle((x0 * width, y0 * height, x1 * width, y1 * height), fill=255)
        return canvas

    # --- generation -----------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> GenerationResult:
        (result,) = self.generate_batch([request])
        if isinstance(result, GenerationError):
            raise result
        return result

    def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult | GenerationError]:
        start = time.perf_counter()
        prepared: list[_Job | GenerationError] = []
        for request in requests:
            try:
                self.validate(request)
                prepared.append(self._prepare(request))
            except GenerationError as error:
                prepared.append(error)
        prepare_ms = (time.perf_counter() - start) * 1000
        # every output of every job, grouped by size, in chunks of ``batch``
        items = [
            (job, index)
            for job in prepared
            if isinstance(job, _Job)
            for index in range(job.request.options.num_outputs)
        ]
        images: dict[tuple[int, int], Image.Image] = {}
        failures: dict[int, GenerationError] = {}
        diffusion_start = time.perf_counter()
        by_size: dict[tuple[int, int], list[tuple[_Job, int]]] = {}
        for job, index in items:
            by_size.setdefault(job.person.size, []).append((job, index))
        for group in by_size.values():
            for offset in range(0, len(group), self.batch):
                chunk = group[offset : offset + self.batch]
                try:
                    outs = self._denoise(chunk)
                except GenerationError as error:
                    for job, _ in chunk:
                        failures[id(job)] = error
                    continue
                for (job, index), image in zip(chunk, outs, strict=True):
                    images[(id(job), index)] = image
        diffusion_ms = (time.perf_counter() - diffusion_start) * 1000
        results: list[GenerationResult | GenerationError] = []
        for item in prepared:
            if isinstance(item, GenerationError):
                results.append(item)
            elif id(item) in failures:
                results.append(failures[id(item)])
            else:
                own = [images[(id(item), index)] for index in range(item.request.options.num_outputs)]
                results.append(
                    image_result(item.request, own, NAME, {"prepare": prepare_ms, "diffusion": diffusion_ms})
                )
        return results

    def _prepare(self, request: GenerationRequest) -> _Job:
        options = request.options
        width, height = round_to(options.width, SIZE_MULTIPLE), round_to(options.height, SIZE_MULTIPLE)
        person = cover(decode(request.model_photo, what="model photo"), width, height)
        garment = pad(decode(request.garments[0].data, what="garment image"), width, height)
        return _Job(request, person, garment, self.mask(person, request.garments[0].category))

    def _to_tensor(self, images: list[Image.Image]) -> Any:
        array = np.stack([np.asarray(image, np.float32) for image in images]) / 127.5 - 1.0
        return self._torch.from_numpy(array).permute(0, 3, 1, 2).to(self.device, self.dtype)

    def _encode(self, pixels: Any, generator: Any) -> Any:
        posterior = self.vae.encode(pixels).latent_dist
        return posterior.sample(generator) * self.vae.config.scaling_factor

    def _denoise(self, chunk: list[tuple[_Job, int]]) -> list[Image.Image]:
        try:
            with self._lock, self._torch.inference_mode():
                return self._denoise_unguarded(chunk)
        except (RuntimeError, MemoryError) as error:
            if hf_layout.is_out_of_memory(error):
                if self._torch.cuda.is_available():
                    self._torch.cuda.empty_cache()
                raise ResourceError(f"{NAME}: out of device memory") from error
            raise

    @contextmanager
    def _on_device(self, model: Any) -> Iterator[Any]:
        """``model``, moved to the device for the block and back to host memory after it when
        offloading."""
        if not self.offload:
            yield model
            return
        model.to(self.device)
        try:
            yield model
        finally:
            model.to("cpu")

    def _denoise_unguarded(self, chunk: list[tuple[_Job, int]]) -> list[Image.Image]:
        torch = self._torch
        masks = np.stack([np.asarray(job.mask, np.float32) / 255.0 for job, _ in chunk])[:, None]
        mask = torch.from_numpy((masks >= 0.5).astype(np.float32)).to(self.device, self.dtype)
        persons = self._to_tensor([job.person for job, _ in chunk])
        garments = self._to_tensor([job.garment for job, _ in chunk])
        generators = [
            torch.Generator("cpu").manual_seed(job.request.options.seed * 1000 + index)
            for job, index in chunk
        ]
        # per output: its own generator for the VAE samples and the noise, so a batch gives the
        # same images as one-by-one runs
        masked_latents, garment_latents, noises = [], [], []
        with self._on_device(self.vae):
            for row, generator in enumerate(generators):
                masked_latents.append(
                    self._encode(persons[row : row + 1] * (mask[row : row + 1] < 0.5), generator)
                )
                garment_latents.append(self._encode(garments[row : row + 1], generator))
        masked_latent = torch.cat(masked_latents)
        garment_latent = torch.cat(garment_latents)
        mask_latent = torch.nn.functional.interpolate(mask, size=masked_latent.shape[-2:], mode="nearest")
        condition = torch.cat([masked_latent, garment_latent], dim=-2)
        mask_condition = torch.cat([mask_latent, torch.zeros_like(mask_latent)], dim=-2)
        for generator in generators:
            noises.append(torch.randn(tuple(condition.shape[1:]), generator=generator))
        self.scheduler.set_timesteps(self.steps, device=self.device)
        latents = torch.stack(noises).to(self.device, self.dtype) * self.scheduler.init_noise_sigma
        guided = self.guidance > 1.0
        if guided:
            unconditional = torch.cat([masked_latent, torch.zeros_like(garment_latent)], dim=-2)
            condition = torch.cat([unconditional, condition])
            mask_condition = torch.cat([mask_condition, mask_condition])
        with self._on_device(self.unet) as unet:
            for t in self.scheduler.timesteps:
                model_in = torch.cat([latents, latents]) if guided else latents
                model_in = self.scheduler.scale_model_input(model_in, t)
                model_in = torch.cat([model_in, mask_condition, condition], dim=1)
                noise = unet(model_in, t, encoder_hidden_states=None, return_dict=False)[0]
                if guided:
                    unconditional_noise, conditional_noise = noise.chunk(2)
                    noise = unconditional_noise + self.guidance * (conditional_noise - unconditional_noise)
                latents = self.scheduler.step(noise, t, latents, eta=ETA, generator=generators).prev_sample
        person_latents = latents.split(latents.shape[-2] // 2, dim=-2)[0]
        with self._on_device(self.vae) as vae:
            decoded = vae.decode(person_latents / vae.config.scaling_factor, return_dict=False)[0]
        pixels = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()
        results = []
        for (job, _), image in zip(chunk, pixels, strict=True):
            soft = job.mask.filter(ImageFilter.GaussianBlur(2))
            results.append(Image.composite(Image.fromarray(image), job.person, soft))
        return results


def _convex_hull(points: np.ndarray) -> list[tuple[float, float]]:
    """Andrew's monotone chain."""
    ordered = sorted({(float(x), float(y)) for x, y in points})
    if len(ordered) < 3:
        return ordered

    def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    for point in ordered:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], point) <= 0:
            lower.pop()
        lower.append(point)
    upper: list[tuple[float, float]] = []
    for point in reversed(ordered):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], point) <= 0:
            upper.pop()
        upper.append(point)
    return lower[:-1] + upper[:-1]
