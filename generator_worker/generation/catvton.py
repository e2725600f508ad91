"""The ``catvton`` backend: CatVTON (Chong et al., ICLR 2025; weights ``zhengchong/CatVTON``,
CC BY-NC-SA 4.0: not for commercial use) on a Stable Diffusion 1.5 inpainting base, loaded from
a local directory (``local_files_only=True``, ``HF_HUB_OFFLINE=1``; nothing is downloaded).

How it works (after the published method): the masked person and the garment are encoded by the
VAE and concatenated along the height in latent space (person above, garment below), with the
inpainting mask (zero over the garment half) and the noisy latents as the UNet's 9 input
channels. There is no text encoder: the UNet's cross-attention layers are skipped (their
processor returns its input, as CatVTON trained them) and its self-attention layers carry
CatVTON's trained weights. Classifier-free guidance drops the garment (zeros) in the
unconditional branch. The repainted region comes from the person's pose landmarks and the
garment's category (top, bottom, dress, outer) when the mediapipe analyser is installed, else
from a per-category box; the result is blended back into the photo outside the mask.
``generate_batch`` runs up to ``VTO_GPU_BATCH`` outputs, across requests, through one denoising
loop. Images only; one garment a request.

Required layout (``VTO_GPU_MODEL_DIR``)::

    unet/config.json, unet/diffusion_pytorch_model.safetensors      SD 1.5 inpainting UNet
    vae/config.json, vae/diffusion_pytorch_model.safetensors        its VAE (or sd-vae-ft-mse)
    scheduler/scheduler_config.json                                 DDIM
    mix-48k-1024/attention/model.safetensors                        CatVTON self-attention
      (or vitonhd-16k-512/... or dresscode-16k-512/...)

Imports only torch, diffusers, safetensors, PIL and numpy (lazily), ``base`` and its PIL-only
helpers; the pose analyser is optional.
"""

from __future__ import annotations

import time
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
    license="CC BY-NC-SA 4.0 (CatVTON weights); the SD 1.5 inpainting base is CreativeML OpenRAIL-M",
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

# fractions of (width, height) repainted per category when no pose analyser is available
_BOXES = {
    GarmentCategory.TOP: (0.15, 0.18, 0.85, 0.62),
    GarmentCategory.OUTER: (0.08, 0.16, 0.92, 0.70),
    GarmentCategory.BOTTOM: (0.20, 0.45, 0.80, 0.98),
    GarmentCategory.DRESS: (0.12, 0.18, 0.88, 0.92),
}
# mediapipe landmarks outlining each category's region (shoulders 11/12, elbows 13/14, wrists
# 15/16, hips 23/24, knees 25/26, ankles 27/28)
_LANDMARKS = {
    GarmentCategory.TOP: (11, 12, 13, 14, 23, 24),
    GarmentCategory.OUTER: (11, 12, 13, 14, 15, 16, 23, 24),
    GarmentCategory.BOTTOM: (23, 24, 25, 26, 27, 28),
    GarmentCategory.DRESS: (11, 12, 13, 14, 23, 24, 25, 26),
}


def _skip_processor() -> Any:
    class SkipAttnProcessor:
        """CatVTON's cross-attention stand-in: returns its input unchanged."""

        def __call__(self, attn: Any, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
            return hidden_states

    return SkipAttnProcessor()


def load_attention(unet: Any, path: Path) -> None:
    """Put CatVTON's self-attention weights (``path``) into ``unet``; refuse partial files."""
    from safetensors.torch import load_file

    from generator_worker.generation.random_weights_catvton import self_attention_modules

    params = self_attention_modules(unet).state_dict(keep_vars=True)
    tensors = load_file(str(path))
    unknown = sorted(key for key in tensors if key not in params)
    loaded: set[int] = set()
    mismatched = []
    for key, value in tensors.items():
        if key in params:
            target = params[key]
            if tuple(target.shape) != tuple(value.shape):
                mismatched.append(key)
                continue
            target.data.copy_(value.to(target.device, target.dtype))
            loaded.add(id(target))
    unset = sorted(key for key, value in params.items() if id(value) not in loaded)
    if unknown or unset or mismatched:
        problems = [
            f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
            for label, keys in (("unexpected", unknown), ("missing", unset), ("wrong shape", mismatched))
            if keys
        ]
        raise BackendUnavailableError(
            f"CatVTON attention weights {path} do not fit the UNet ({'; '.join(problems)})"
        )


def _prepare_unet(unet: Any) -> Any:
    from diffusers.models.attention_processor import AttnProcessor2_0

    processors = {
        name: (AttnProcessor2_0() if name.endswith("attn1.processor") else _skip_processor())
        for name in unet.attn_processors
    }
    unet.set_attn_processor(processors)
    return unet


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
        self._setup(torch, unet.to(device), vae.to(device), scheduler, options, device, dtype)

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
        self.scheduler = scheduler
        self.device = device
        self.dtype = dtype
        self.steps = options.steps if options.steps is not None else DEFAULT_STEPS
        self.guidance = options.guidance if options.guidance is not None else DEFAULT_GUIDANCE
        self.batch = max(1, options.batch)
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
        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        if self._analyzer is not None:
            points, visibility = self._analyzer.landmarks(np.asarray(person))
            chosen = [tuple(points[i]) for i in _LANDMARKS[category] if visibility[i] > 0.3]
            if len(chosen) >= 3:
                hull = _convex_hull(np.array(chosen, np.float32))
                draw.polygon([(float(x), float(y)) for x, y in hull], fill=255)
                grow = max(3, (int(0.04 * max(width, height)) // 2) * 2 + 1)
                return canvas.filter(ImageFilter.MaxFilter(min(grow, 31)))
        x0, y0, x1, y1 = _BOXES[category]
        draw.rectangle((x0 * width, y0 * height, x1 * width, y1 * height), fill=255)
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
            with self._torch.inference_mode():
                return self._denoise_unguarded(chunk)
        except (RuntimeError, MemoryError) as error:
            if hf_layout.is_out_of_memory(error):
                if self._torch.cuda.is_available():
                    self._torch.cuda.empty_cache()
                raise ResourceError(f"{NAME}: out of device memory") from error
            raise

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
        for t in self.scheduler.timesteps:
            model_in = torch.cat([latents, latents]) if guided else latents
            model_in = self.scheduler.scale_model_input(model_in, t)
            model_in = torch.cat([model_in, mask_condition, condition], dim=1)
            noise = self.unet(model_in, t, encoder_hidden_states=None, return_dict=False)[0]
            if guided:
                unconditional_noise, conditional_noise = noise.chunk(2)
                noise = unconditional_noise + self.guidance * (conditional_noise - unconditional_noise)
            latents = self.scheduler.step(noise, t, latents, eta=ETA, generator=generators).prev_sample
        person_latents = latents.split(latents.shape[-2] // 2, dim=-2)[0]
        decoded = self.vae.decode(person_latents / self.vae.config.scaling_factor, return_dict=False)[0]
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
