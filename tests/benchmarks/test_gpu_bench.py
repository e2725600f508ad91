"""benchmarks/gpu_bench.py at ``--scale tiny`` on the CPU (the full run needs a GPU), its
options, and that it imports with nothing of the application's other dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from benchmarks import gpu_bench


def test_steps_take_one_number_or_one_per_model() -> None:
    assert gpu_bench.parse([]).steps == {}
    assert gpu_bench.parse(["--steps", "8"]).steps == dict.fromkeys(gpu_bench.MODELS, 8)
    assert gpu_bench.parse(["--steps", "qwen-image-edit=10,wan=15"]).steps == {
        "qwen-image-edit": 10,
        "wan": 15,
    }
    with pytest.raises(SystemExit):
        gpu_bench.parse(["--steps", "nope=3"])
    with pytest.raises(SystemExit):
        gpu_bench.parse(["--models", "sdxl"])


def test_tiny_run_prints_a_row_per_batch_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    argv = ["--scale", "tiny", "--models", "catvton,wan", "--batches", "1,2", "--steps", "2"]
    argv += ["--width", "64", "--height", "64", "--frames", "5", "--device", "cpu", "--json", str(out)]
    assert gpu_bench.main(argv) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["model"], r["batch"], r["status"]) for r in rows] == [
        ("catvton", 1, "ok"),
        ("catvton", 2, "ok"),
        ("wan", 1, "ok"),
        ("wan", 2, "ok"),
    ]
    for row in rows:
        assert row["steps"] == 2 and row["default_steps"] > 2
        assert row["measured_s"] > 0 and row["s_per_image"] == pytest.approx(
            row["measured_s"] / row["batch"],
            rel=0.01,
            abs=0.001,  # both rounded to ms
        )
        assert row["s_per_image_default"] >= row["s_per_image"] * 0.5  # extrapolated to more steps
    assert set(report["models"]) == {"catvton", "wan"}
    printed = capsys.readouterr().out
    assert printed.count("catvton ") >= 4 and "# all results" in printed


def test_out_of_memory_is_recognised_through_causes() -> None:
    class OutOfMemoryError(RuntimeError):
        pass

    wrapped = ValueError("declared")
    wrapped.__cause__ = OutOfMemoryError("CUDA out of memory")
    assert gpu_bench.out_of_memory(wrapped)
    assert not gpu_bench.out_of_memory(ValueError("other"))


def test_the_gpu_path_imports_without_the_apps_other_dependencies() -> None:
    """What the GPU host has: torch, transformers, diffusers, numpy, PIL; nothing else."""
    script = textwrap.dedent(
        """
        import importlib.abc, sys
        BLOCK = {"pydantic", "pydantic_settings", "fastapi", "starlette", "cv2", "mediapipe", "av",
                 "prometheus_client", "sqlalchemy", "psycopg", "skimage", "tenacity", "infra", "ledger",
                 "projections", "command_api", "kafka", "accelerate", "ftfy"}

        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] not in BLOCK:
                    return None
                frame = sys._getframe(1)
                while frame is not None:  # an import (not importlib.util.find_spec probing)
                    if frame.f_code.co_name == "_find_and_load_unlocked":
                        raise ImportError(f"blocked: {name}")
                    frame = frame.f_back
                return None

        sys.meta_path.insert(0, Blocker())
        import benchmarks.gpu_bench
        import generator_worker.generation.catvton
        import generator_worker.generation.qwen_edit
        import benchmarks.random_weights.catvton
        import benchmarks.random_weights.qwen
        import benchmarks.random_weights.wan
        import generator_worker.generation.wan_video
        print(sorted(k for k in sys.modules if k.split(".")[0] in BLOCK))
        """
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
