"""Choosing a backend by name (``VTO_GENERATOR``), with optional fault injection.

Backends: ``offline`` (CPU, no weights), ``qwen-image-edit`` and ``catvton`` (GPU image backends
loaded from ``VTO_GPU_MODEL_DIR``), ``wan`` (videos: the try-on images of
``VTO_VIDEO_IMAGE_GENERATOR`` animated by Wan 2.x image-to-video from ``VTO_VIDEO_MODEL_DIR``).
The GPU modules, and torch with them, are imported only when their backend is chosen.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from generator_worker.generation.base import (
    BackendInfo,
    BackendUnavailableError,
    Generator,
    JobKind,
)
from generator_worker.generation.faults import FaultInjectingGenerator

if TYPE_CHECKING:  # the generator library never imports the settings module at run time
    from generator_worker.generation.hf_layout import GpuOptions
    from infra.settings import Settings

IMAGE_BACKENDS = ("offline", "qwen-image-edit", "catvton")
BACKENDS = (*IMAGE_BACKENDS, "wan")
WAN_LICENSE = "Apache-2.0 (Wan 2.x)"


def _unknown(name: str) -> BackendUnavailableError:
    return BackendUnavailableError(f"unknown generator {name!r}; choose one of {', '.join(BACKENDS)}")


def backend_info(name: str, *, video_image_generator: str = "qwen-image-edit") -> BackendInfo:
    """A backend's declared inputs, resolutions and license, without loading it (nor torch).
    ``wan``'s is that of the image backend it animates, plus video jobs."""
    if name == "offline":
        from generator_worker.generation.offline import OFFLINE_INFO

        return OFFLINE_INFO
    if name == "qwen-image-edit":
        from generator_worker.generation.qwen_edit import QWEN_EDIT_INFO

        return QWEN_EDIT_INFO
    if name == "catvton":
        from generator_worker.generation.catvton import CATVTON_INFO

        return CATVTON_INFO
    if name == "wan":
        if video_image_generator not in IMAGE_BACKENDS:
            raise _unknown(video_image_generator)
        inner = backend_info(video_image_generator)
        return dataclasses.replace(
            inner,
            name=f"{inner.name}+wan",
            license=f"{inner.license}; {WAN_LICENSE}",
            job_kinds=inner.job_kinds | {JobKind.VIDEO},
            requires_weights=True,
        )
    raise _unknown(name)


def _image_generator(name: str, gpu: GpuOptions | None) -> Generator:
    if name == "offline":
        from generator_worker.generation.offline import OfflineGenerator

        return OfflineGenerator()
    if name not in IMAGE_BACKENDS:
        raise _unknown(name)
    from generator_worker.generation.hf_layout import GpuOptions

    options = gpu or GpuOptions(model_dir=None)
    if name == "qwen-image-edit":
        from generator_worker.generation.qwen_edit import QwenImageEditGenerator

        return QwenImageEditGenerator(options)
    from generator_worker.generation.catvton import CatVTONGenerator

    return CatVTONGenerator(options)


def build_generator(
    name: str = "offline",
    failure_rate: float = 0.0,
    *,
    gpu: GpuOptions | None = None,
    video_model_dir: Path | str | None = None,
    video_image_generator: str = "qwen-image-edit",
    video_image_offload: str = "model",
    video_max_area: int | None = None,
    fault_seed: int | None = None,
) -> Generator:
    """Build the backend ``name``; wrap it in fault injection when ``failure_rate`` > 0.

    ``gpu`` configures the GPU backends (their model directory, device, dtype, steps, guidance,
    LoRA, batch size, offload and VAE tiling). For ``wan``, ``gpu.offload`` and
    ``gpu.vae_tiling`` apply to the Wan pipeline too, while the image backend it animates is
    built with ``video_image_offload`` (by default its models wait in host memory and move to
    the device only while they run, so they do not sit beside Wan); ``video_max_area`` replaces
    the Wan model's generation area. Raises ``BackendUnavailableError`` for an unknown name, a
    GPU backend whose directory is missing or incomplete (listing the missing files), or one
    without torch, diffusers and accelerate installed.
    """
    if not 0.0 <= failure_rate <= 1.0:
        raise ValueError("failure_rate must be within 0..1")
    generator: Generator
    if name == "wan":
        if video_model_dir is None:
            raise BackendUnavailableError(
                "the wan generator needs VTO_VIDEO_MODEL_DIR (a local Wan 2.x image-to-video "
                "directory); nothing is downloaded"
            )
        from generator_worker.generation.hf_layout import GpuOptions
        from generator_worker.generation.wan_video import WanVideoGenerator

        options = gpu or GpuOptions(model_dir=None)
        if video_image_generator == "wan":
            raise _unknown(video_image_generator)
        inner = _image_generator(
            video_image_generator, dataclasses.replace(options, offload=video_image_offload)
        )
        try:
            generator = WanVideoGenerator(
                Path(video_model_dir),
                inner,
                device=options.device,
                dtype=options.dtype,
                offload=options.offload,
                vae_tiling=options.vae_tiling,
                max_area=video_max_area,
            )
        except BaseException:
            inner.close()
            raise
    else:
        generator = _image_generator(name, gpu)
    if failure_rate > 0:
        return FaultInjectingGenerator(generator, failure_rate, rng_seed=fault_seed)
    return generator


def generator_from_settings(settings: Settings) -> Generator:
    """``build_generator`` from ``VTO_GENERATOR``, ``VTO_GENERATOR_FAILURE_RATE``, the
    ``VTO_GPU_*`` settings and, for ``wan``, ``VTO_VIDEO_MODEL_DIR``,
    ``VTO_VIDEO_IMAGE_GENERATOR``, ``VTO_VIDEO_IMAGE_OFFLOAD`` and ``VTO_VIDEO_MAX_AREA``."""
    if settings.generator == "offline":
        return build_generator("offline", failure_rate=settings.generator_failure_rate)
    from generator_worker.generation.hf_layout import GpuOptions

    gpu = GpuOptions(
        model_dir=settings.gpu_model_dir,
        device=settings.gpu_device,
        dtype=settings.gpu_dtype,
        steps=settings.gpu_steps,
        guidance=settings.gpu_guidance,
        lora_path=settings.gpu_lora_path,
        batch=settings.gpu_batch,
        offload=settings.gpu_offload,
        vae_tiling=settings.gpu_vae_tiling,
        lora_scheduler=settings.gpu_lora_scheduler,
    )
    return build_generator(
        settings.generator,
        failure_rate=settings.generator_failure_rate,
        gpu=gpu,
        video_model_dir=settings.video_model_dir,
        video_image_generator=settings.video_image_generator,
        video_image_offload=settings.video_image_offload,
        video_max_area=settings.video_max_area,
    )
