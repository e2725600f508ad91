"""benchmarks/gpu_bench.py at ``--scale tiny`` on the CPU (the full run needs a GPU), its
options, and that it imports with nothing of the application's other dependencies."""

from __future__ import annotations

import json
import os
import shutil
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
        import benchmarks.random_weights.catvton
        import benchmarks.random_weights.qwen
        import benchmarks.random_weights.wan
        import generator_worker.generation.catvton
        import generator_worker.generation.qwen_edit
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


def test_the_layout_check_passes_and_catches_a_drifting_mapping(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpu_bench.main(["--check-layouts"]) == 0
    printed = capsys.readouterr().out
    assert printed.count(": PASS") == 3 and "catvton attention file" in printed
    from generator_worker.generation import catvton

    monkeypatch.setattr(catvton, "ATTENTION_SLOTS", 7)  # diffusers' built-in processor's count
    assert gpu_bench.main(["--check-layouts"]) == 1
    printed = capsys.readouterr().out
    assert "# layout catvton attention file (SD 1.5 full size, upstream numbering): FAIL" in printed
    assert "8.to_q.weight does not land in the second attn1" in printed


def test_the_memory_table_lists_every_full_size_component(capsys: pytest.CaptureFixture[str]) -> None:
    rows = {name: (count, size) for name, count, size in gpu_bench.memory_rows()}
    assert rows["qwen.transformer"][0] == pytest.approx(20.43e9, rel=0.01)
    assert rows["qwen.transformer"][1] == 2 * rows["qwen.transformer"][0]  # bf16
    assert rows["wan2.1-i2v-14b-480p.vae"][1] == 4 * rows["wan2.1-i2v-14b-480p.vae"][0]  # fp32
    assert {"catvton.unet", "wan2.2-i2v-a14b.transformer_2", "wan2.2-ti2v-5b.vae"} <= set(rows)
    assert gpu_bench.main(["--memory"]) == 0
    assert "qwen.text_encoder" in capsys.readouterr().out


def test_gpu_check_refuses_to_start_when_the_layout_check_fails(tmp_path: Path) -> None:
    """scripts/gpu_check.sh on a tree whose CatVTON loader numbers 7 slots a block: it stops
    after the layout check, before the smoke check and the bench."""
    root = Path(__file__).resolve().parents[2]
    tree = tmp_path / "tree"
    for part in ("benchmarks", "generator_worker", "scripts"):
        shutil.copytree(root / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
    loader = tree / "generator_worker/generation/catvton.py"
    text = loader.read_text()
    assert "ATTENTION_SLOTS = 8\n" in text
    loader.write_text(text.replace("ATTENTION_SLOTS = 8\n", "ATTENTION_SLOTS = 7\n"))
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (shim / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    done = subprocess.run(
        ["bash", str(tree / "scripts/gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode != 0
    assert "FAIL" in done.stdout and "layout check failed" in done.stdout
    assert "# smoke" not in done.stdout and "s/img" not in done.stdout
    assert not (tmp_path / "out" / "gpu_bench.json").exists()
