"""The mutation check's table of breaks (``scripts/mutation_check.py``) stays true to the code:
each break applies to its file (its snippet is there exactly once) and names tests that exist,
and each break changes the code."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def mutation_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_break_applies_once_and_changes_the_code() -> None:
    check = mutation_check()
    names = [b.name for b in check.BREAKS]
    assert len(names) == len(set(names)), "break names are unique"
    for brk in check.BREAKS:
        text = (ROOT / brk.path).read_text()
        assert brk.apply(text) != text, brk.name
        assert brk.tests, f"{brk.name} names no test"


def test_a_stale_break_is_refused() -> None:
    check = mutation_check()
    brk = check.Break("x", "projections/audit.py", "no such code", "", ("tests",))
    with pytest.raises(check.StaleBreak, match="found 0 times"):
        brk.apply("some code")
    with pytest.raises(check.StaleBreak, match="found 2 times"):
        check.Break("x", "p", "a", "b", ("t",)).apply("a a")


def test_every_named_test_exists() -> None:
    check = mutation_check()
    ids = sorted({t for b in check.BREAKS for t in b.tests})
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *ids],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
