"""Fault injection, backend selection by name and typed errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from generator_worker.generation import (
    BackendUnavailableError,
    GenerationRequest,
    GenerationResult,
    Generator,
    InjectedFailureError,
    JobKind,
    NoPersonFoundError,
    ResourceError,
    backend_info,
    build_generator,
    generator_from_settings,
)
from generator_worker.generation.faults import FaultInjectingGenerator
from generator_worker.generation.offline import OFFLINE_INFO, OfflineGenerator
from tests.generator_worker.conftest import image_request, top


class _Stub(Generator):
    info = OFFLINE_INFO

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.calls += 1
        return GenerationResult(outputs=(), backend="stub", timings_ms={})


REQUEST = image_request(b"x", (top(b"y"),))


def test_failure_rate_fails_that_share_with_a_retryable_error() -> None:
    inner = _Stub()
    chaos = FaultInjectingGenerator(inner, 0.3, rng_seed=1)
    failures = 0
    for _ in range(1000):
        try:
            chaos.generate(REQUEST)
        except InjectedFailureError as error:
            caught: ResourceError = error
            failures += caught.retryable
    assert 240 <= failures <= 360
    assert inner.calls == 1000 - failures


def test_failure_rate_bounds() -> None:
    always = FaultInjectingGenerator(_Stub(), 1.0)
    with pytest.raises(InjectedFailureError):
        always.generate(REQUEST)
    never = FaultInjectingGenerator(_Stub(), 0.0)
    assert never.generate(REQUEST).backend == "stub"
    results = FaultInjectingGenerator(_Stub(), 1.0).generate_batch([REQUEST, REQUEST])
    assert all(isinstance(r, InjectedFailureError) for r in results)
    with pytest.raises(ValueError):
        FaultInjectingGenerator(_Stub(), 1.5)


def test_error_retryability_flags() -> None:
    assert NoPersonFoundError("x").retryable is False
    assert ResourceError("x").retryable is True
    assert BackendUnavailableError("x").retryable is False


def test_build_by_name_and_unknown_names() -> None:
    generator = build_generator("offline", failure_rate=0.2, fault_seed=0)
    assert isinstance(generator, FaultInjectingGenerator)
    assert isinstance(generator.inner, OfflineGenerator)
    assert generator.info.commercial_use is True
    generator.close()
    with pytest.raises(BackendUnavailableError):
        build_generator("nonsense")
    with pytest.raises(BackendUnavailableError, match="VTO_DIFFUSION_WEIGHTS_DIR"):
        build_generator("diffusion")
    with pytest.raises(BackendUnavailableError, match="weights"):
        build_generator("diffusion", weights_dir=Path("/nonexistent/weights"))


def test_backends_declare_inputs_sizes_and_license() -> None:
    offline = backend_info("offline")
    assert offline.supports_size(768, 1024)
    assert JobKind.VIDEO in offline.job_kinds
    diffusion = backend_info("diffusion")
    assert diffusion.requires_weights is True
    assert diffusion.license


@dataclass
class _Settings:
    generator: str = "offline"
    generator_failure_rate: float = 1.0
    diffusion_weights_dir: Path | None = None


def test_generator_from_settings() -> None:
    generator = generator_from_settings(_Settings())  # type: ignore[arg-type]
    with pytest.raises(InjectedFailureError):
        generator.generate(REQUEST)
    generator.close()


def test_generator_from_the_real_settings_object(monkeypatch: pytest.MonkeyPatch) -> None:
    settings_module = pytest.importorskip("infra.settings")
    monkeypatch.setenv("VTO_GENERATOR", "offline")
    monkeypatch.setenv("VTO_GENERATOR_FAILURE_RATE", "0.5")
    generator = generator_from_settings(settings_module.Settings())
    assert isinstance(generator, FaultInjectingGenerator) and generator.rate == 0.5
    generator.close()
