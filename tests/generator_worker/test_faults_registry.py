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
    with pytest.raises(BackendUnavailableError, match="unknown generator 'diffusion'"):
        build_generator("diffusion")  # the custom-layout backend is gone
    with pytest.raises(BackendUnavailableError, match="VTO_VIDEO_MODEL_DIR"):
        build_generator("wan")


def test_backends_declare_inputs_sizes_and_license() -> None:
    offline = backend_info("offline")
    assert offline.supports_size(768, 1024)
    assert JobKind.VIDEO in offline.job_kinds
    qwen = backend_info("qwen-image-edit")
    assert qwen.requires_weights is True and qwen.commercial_use is True
    assert "Apache-2.0" in qwen.license and qwen.job_kinds == {JobKind.IMAGE}
    catvton = backend_info("catvton")
    assert catvton.requires_weights is True and catvton.commercial_use is False
    assert "CC BY-NC-SA" in catvton.license and catvton.max_garments == 1
    wan = backend_info("wan", video_image_generator="catvton")
    assert wan.job_kinds == {JobKind.IMAGE, JobKind.VIDEO} and wan.commercial_use is False
    assert "Wan" in wan.license and "CC BY-NC-SA" in wan.license
    with pytest.raises(BackendUnavailableError):
        backend_info("diffusion")


def test_backend_info_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from generator_worker.generation import backend_info\n"
        "for name in ('offline', 'qwen-image-edit', 'catvton', 'wan'):\n"
        "    backend_info(name)\n"
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_gpu_modules_import_nothing_but_the_ml_stack() -> None:
    """The GPU benchmark machine has torch, transformers and diffusers only."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import generator_worker.generation.qwen_edit, generator_worker.generation.catvton\n"
        "import generator_worker.generation.wan_video\n"
        "banned = ('pydantic', 'fastapi', 'infra', 'cv2', 'mediapipe', 'torch')\n"
        "bad = [m for m in banned if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@dataclass
class _Settings:
    generator: str = "offline"
    generator_failure_rate: float = 1.0


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


def test_gpu_backends_from_the_real_settings_refuse_an_empty_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings_module = pytest.importorskip("infra.settings")
    monkeypatch.setenv("VTO_GPU_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("VTO_GPU_DTYPE", "bf16")
    monkeypatch.setenv("VTO_GPU_BATCH", "4")
    for name, missing in (("catvton", "unet/config.json"), ("qwen-image-edit", "model_index.json")):
        monkeypatch.setenv("VTO_GENERATOR", name)
        settings = settings_module.Settings()
        assert settings.gpu_batch == 4 and settings.gpu_dtype == "bf16" and settings.gpu_steps is None
        with pytest.raises(BackendUnavailableError, match=f"VTO_GPU_MODEL_DIR.*missing: {missing}"):
            generator_from_settings(settings)
    monkeypatch.setenv("VTO_GPU_DTYPE", "int4")
    with pytest.raises(ValueError, match="gpu_dtype"):
        settings_module.Settings()


def test_the_gpu_settings_reach_the_backends(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings_module = pytest.importorskip("infra.settings")
    from generator_worker.generation import registry

    seen: dict[str, object] = {}

    def capture(name: str, **kwargs: object) -> Generator:
        seen.update(kwargs, name=name)
        return _Stub()

    monkeypatch.setattr(registry, "build_generator", capture)
    for name, value in {
        "GENERATOR": "wan",
        "GPU_MODEL_DIR": str(tmp_path),
        "GPU_OFFLOAD": "model",
        "GPU_VAE_TILING": "true",
        "GPU_LORA_SCHEDULER": "base",
        "VIDEO_MODEL_DIR": str(tmp_path),
        "VIDEO_IMAGE_OFFLOAD": "none",
        "VIDEO_MAX_AREA": str(480 * 832),
    }.items():
        monkeypatch.setenv(f"VTO_{name}", value)
    generator_from_settings(settings_module.Settings())
    gpu = seen["gpu"]
    assert (gpu.offload, gpu.vae_tiling, gpu.lora_scheduler) == ("model", True, "base")  # type: ignore[attr-defined]
    assert seen["video_image_offload"] == "none" and seen["video_max_area"] == 480 * 832
    for name, bad in (("GPU_OFFLOAD", "disk"), ("GPU_LORA_SCHEDULER", "turbo"), ("VIDEO_MAX_AREA", "10")):
        monkeypatch.setenv(f"VTO_{name}", bad)
        with pytest.raises(ValueError, match=name.lower()):
            settings_module.Settings()
        monkeypatch.delenv(f"VTO_{name}")


def test_no_application_module_imports_test_or_benchmark_helpers() -> None:
    """The random-weight builders live in ``benchmarks/random_weights``; the packages that ship
    (the wheel's) never import ``tests`` or ``benchmarks``."""
    import ast

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("command_api", "generator_worker", "infra", "ledger", "migrations", "projections"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module]
                offenders += [
                    f"{path.relative_to(root)}: {n}"
                    for n in names
                    if n.split(".")[0] in ("tests", "benchmarks")
                ]
    assert offenders == []
    assert not list((root / "generator_worker").rglob("random_weights*"))
