"""Choosing a backend by name (``VTO_GENERATOR``), with optional fault injection."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from generator_worker.generation.base import (
    BackendInfo,
    BackendUnavailableError,
    Generator,
)
from generator_worker.generation.faults import FaultInjectingGenerator

if TYPE_CHECKING:  # the generator library never imports the settings module at run time
    from infra.settings import Settings

BACKENDS = ("offline", "diffusion")


def backend_info(name: str) -> BackendInfo:
    """A backend's declared inputs, resolutions and license, without loading it."""
    if name == "offline":
        from generator_worker.generation.offline import OFFLINE_INFO

        return OFFLINE_INFO
    if name == "diffusion":
        from generator_worker.generation.diffusion import DIFFUSION_INFO

        return DIFFUSION_INFO
    raise BackendUnavailableError(f"unknown generator {name!r}; choose one of {', '.join(BACKENDS)}")


def build_generator(
    name: str = "offline",
    failure_rate: float = 0.0,
    weights_dir: Path | str | None = None,
    *,
    device: str | None = None,
    fault_seed: int | None = None,
) -> Generator:
    """Build the backend ``name``; wrap it in fault injection when ``failure_rate`` > 0.

    Raises ``BackendUnavailableError`` for an unknown name, or a diffusion backend without
    weights (or without torch/diffusers installed).
    """
    if not 0.0 <= failure_rate <= 1.0:
        raise ValueError("failure_rate must be within 0..1")
    generator: Generator
    if name == "offline":
        from generator_worker.generation.offline import OfflineGenerator

        generator = OfflineGenerator()
    elif name == "diffusion":
        from generator_worker.generation.diffusion import DiffusionGenerator

        if weights_dir is None:
            raise BackendUnavailableError(
                "the diffusion generator needs VTO_DIFFUSION_WEIGHTS_DIR (a local weights "
                "directory); nothing is downloaded"
            )
        generator = DiffusionGenerator(Path(weights_dir), device=device)
    else:
        raise BackendUnavailableError(f"unknown generator {name!r}; choose one of {', '.join(BACKENDS)}")
    if failure_rate > 0:
        return FaultInjectingGenerator(generator, failure_rate, rng_seed=fault_seed)
    return generator


def generator_from_settings(settings: Settings) -> Generator:
    """``build_generator`` from ``VTO_GENERATOR``, ``VTO_GENERATOR_FAILURE_RATE`` and
    ``VTO_DIFFUSION_WEIGHTS_DIR``."""
    return build_generator(
        settings.generator,
        failure_rate=settings.generator_failure_rate,
        weights_dir=settings.diffusion_weights_dir,
    )
