"""The diffusion backend: a mask-and-garment conditioned latent diffusion try-on pipeline,
loaded only from a local weights directory (nothing is ever downloaded).

Weights directory layout (diffusers ``save_pretrained`` folders):

* ``unet/``: ``UNet2DModel`` whose input is [noisy latents (4), masked-person latents (4),
  mask (1)] over the person and garment side by side (the CatVTON-style spatial
  concatenation, no text encoder), output 4 channels;
* ``vae/``: ``AutoencoderKL``; ``scheduler/``: ``DDIMScheduler``;
* ``vto_pipeline.json``: ``{"name", "license", "commercial_use", "width", "height", "steps"}``.

Runs on CUDA in bf16 (fp16 where bf16 is unsupported) when present, else on CPU in fp32, and
batches all outputs of all requests of a ``generate_batch`` call through one denoising loop.
torch and diffusers are imported lazily: they are the optional ``diffusion`` extra.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from generator_worker.generation import imaging
from generator_worker.generation.base import (
    BackendInfo,
    BackendUnavailableError,
    GarmentCategory,
    GeneratedOutput,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    Generator,
    JobKind,
    ResourceError,
)
from generator_worker.generation.cvcompat import cv2
from generator_worker.generation.pose import PersonAnalyzer
from generator_worker.generation.video import encode_mp4, lookbook_frames

REQUIRED = ("unet", "vae", "scheduler", "vto_pipeline.json")

DIFFUSION_INFO = BackendInfo(
    name="diffusion",
    license="depends on the weights: Leffa (MIT) and FASHN VTON v1.5 (Apache-2.0) allow "
    "commercial use; CatVTON, IDM-VTON and OOTDiffusion are non-commercial",
    commercial_use=False,  # until the weights' own vto_pipeline.json says otherwise
    job_kinds=frozenset({JobKind.IMAGE, JobKind.VIDEO}),
    categories=frozenset(GarmentCategory),
    needs_background=False,
    min_size=(64, 64),
    max_size=(2048, 2048),
    max_garments=1,
    max_outputs=4,
    requires_weights=True,
    notes="Loads from VTO_DIFFUSION_WEIGHTS_DIR only (local_files_only, HF_HUB_OFFLINE=1).",
)


@dataclass(frozen=True)
class _Prepared:
    request: GenerationRequest
    person: NDArray[np.uint8]  # model resolution
    garment: NDArray[np.uint8]
    mask: NDArray[np.float32]  # 1 where the garment goes


class DiffusionGenerator(Generator):
    def __init__(self, weights_dir: Path, device: str | None = None) -> None:
        weights_dir = Path(weights_dir)
        missing = [name for name in REQUIRED if not (weights_dir / name).exists()]
        if missing:
            raise BackendUnavailableError(
                f"diffusion weights missing in {weights_dir}: {', '.join(missing)}. Put a "
                "try-on pipeline there (unet/, vae/, scheduler/, vto_pipeline.json) and point "
                "VTO_DIFFUSION_WEIGHTS_DIR at it; nothing is downloaded."
            )
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            import torch
            from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel
        except ImportError as error:
            raise BackendUnavailableError(
                "the diffusion generator needs torch and diffusers (the 'diffusion' extra)"
            ) from error
        config = json.loads((weights_dir / "vto_pipeline.json").read_text())
        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda"):
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            self.dtype = torch.float32
        load: dict[str, Any] = {"local_files_only": True, "torch_dtype": self.dtype}
        self.unet = UNet2DModel.from_pretrained(weights_dir / "unet", **load).to(self.device).eval()
        self.vae = AutoencoderKL.from_pretrained(weights_dir / "vae", **load).to(self.device).eval()
        self.scheduler = DDIMScheduler.from_pretrained(weights_dir / "scheduler", local_files_only=True)
        self.width = int(config.get("width", 384))
        self.height = int(config.get("height", 512))
        self.steps = int(config.get("steps", 30))
        self.info = BackendInfo(
            **{
                **DIFFUSION_INFO.__dict__,
                "name": f"diffusion:{config.get('name', weights_dir.name)}",
                "license": str(config.get("license", "unknown")),
                "commercial_use": bool(config.get("commercial_use", False)),
            }
        )
        self._analyzer = PersonAnalyzer()

    def close(self) -> None:
        self._analyzer.close()

    def generate(self, request: GenerationRequest) -> GenerationResult:
        (result,) = self.generate_batch([request])
        if isinstance(result, GenerationError):
            raise result
        return result

    def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult | GenerationError]:
        start = time.perf_counter()
        prepared: list[_Prepared | GenerationError] = []
        for request in requests:
            try:
                self.validate(request)
                prepared.append(self._prepare(request))
            except GenerationError as error:
                prepared.append(error)
        jobs = [p for p in prepared if isinstance(p, _Prepared)]
        try:
            images = self._denoise(jobs) if jobs else []
        except self._torch.cuda.OutOfMemoryError as error:  # type: ignore[attr-defined]
            raise ResourceError("CUDA out of memory") from error
        diffusion_ms = (time.perf_counter() - start) * 1000
        results: list[GenerationResult | GenerationError] = []
        for item in prepared:
            if isinstance(item, GenerationError):
                results.append(item)
                continue
            own = images[: item.request.options.num_outputs]
            images = images[item.request.options.num_outputs :]
            results.append(self._finish(item, own, diffusion_ms))
        return results

    def _prepare(self, request: GenerationRequest) -> _Prepared:
        photo = imaging.decode_image(request.model_photo, what="model photo")
        person = np.ascontiguousarray(imaging.fit_cover(photo, self.width, self.height))
        points, _ = self._analyzer.landmarks(person)
        garment = imaging.decode_image(request.garments[0].data, what="garment image")
        garment = np.ascontiguousarray(imaging.fit_cover(garment, self.width, self.height))
        mask = np.zeros((self.height, self.width), np.float32)
        hull = cv2.convexHull(points[[11, 12, 23, 24, 13, 14]].astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1.0)
        return _Prepared(request, person, garment, mask)

    def _denoise(self, jobs: list[_Prepared]) -> list[NDArray[np.uint8]]:
        torch = self._torch
        persons, garments, masks, noises = [], [], [], []
        scale = self.vae.config.scaling_factor
        lh, lw = self.height // 8, self.width // 8
        for job in jobs:
            for index in range(job.request.options.num_outputs):
                persons.append(job.person * (1 - job.mask[..., None]))
                garments.append(job.garment)
                masks.append(job.mask)
                g = torch.Generator("cpu").manual_seed(job.request.options.seed * 1000 + index)
                noises.append(torch.randn((4, lh, lw * 2), generator=g))
        with torch.inference_mode():
            side_by_side = np.concatenate([np.stack(persons), np.stack(garments)], axis=2)
            pixels = torch.from_numpy(side_by_side).permute(0, 3, 1, 2).float() / 127.5 - 1
            pixels = pixels.to(self.device, self.dtype)
            cond = self.vae.encode(pixels).latent_dist.mode() * scale
            mask = np.concatenate([np.stack(masks), np.zeros_like(np.stack(masks))], axis=2)
            mask_t = torch.from_numpy(mask)[:, None].to(self.device, self.dtype)
            mask_t = torch.nn.functional.interpolate(mask_t, size=cond.shape[-2:])
            latents = torch.stack(noises).to(self.device, self.dtype)
            latents = latents * self.scheduler.init_noise_sigma
            self.scheduler.set_timesteps(self.steps, device=self.device)
            for t in self.scheduler.timesteps:
                model_in = torch.cat([self.scheduler.scale_model_input(latents, t), cond, mask_t], 1)
                noise_pred = self.unet(model_in, t).sample
                latents = self.scheduler.step(noise_pred, t, latents).prev_sample
            decoded = self.vae.decode(latents / scale).sample
            decoded = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            out = decoded.permute(0, 2, 3, 1).cpu().numpy()
        results = []
        flat_masks = [m for job in jobs for m in [job.mask] * job.request.options.num_outputs]
        flat_persons = [p for job in jobs for p in [job.person] * job.request.options.num_outputs]
        for image, m, person in zip(out, flat_masks, flat_persons, strict=True):
            generated = image[:, : self.width]
            soft = cv2.GaussianBlur(m, (0, 0), 2.0)[..., None]
            results.append((generated * soft + person * (1 - soft)).astype(np.uint8))
        return results

    def _finish(
        self, job: _Prepared, images: list[NDArray[np.uint8]], diffusion_ms: float
    ) -> GenerationResult:
        options = job.request.options
        start = time.perf_counter()
        sized = [np.ascontiguousarray(imaging.resize_to(i, options.width, options.height)) for i in images]
        outputs: list[GeneratedOutput] = []
        if job.request.kind is JobKind.VIDEO:
            data, frames = encode_mp4(
                lookbook_frames(sized, options.fps, options.seconds_per_output),  # type: ignore[arg-type]
                options.width,
                options.height,
                options.fps,
            )
            outputs.append(GeneratedOutput(data, "video/mp4", options.width, options.height, frames))
        else:
            for image in sized:
                data, media_type = imaging.encode_image(
                    image,  # type: ignore[arg-type]
                    options.image_format,  # type: ignore[arg-type]
                    options.jpeg_quality,
                )
                outputs.append(GeneratedOutput(data, media_type, options.width, options.height))
        encode_ms = (time.perf_counter() - start) * 1000
        return GenerationResult(
            outputs=tuple(outputs),
            backend=self.info.name,
            timings_ms={"diffusion": diffusion_ms, "encode": encode_ms, "total": diffusion_ms + encode_ms},
        )
