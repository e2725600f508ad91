"""`vto --help` and every command's help read cleanly at 80 columns: no line wider than the
terminal, and no line broken before the terminal's edge in the middle of a paragraph (what a
docstring's own line breaks used to do)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from infra.cli import app

WIDTH = 80


def command_paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():  # a group's commands
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def early_breaks(lines: list[str]) -> list[str]:
    """Lines of a paragraph that end where the next line's first word would still have fit:
    in free text (between the usage line and the first box) and in a box's text column."""
    found = []
    for line, following in itertools.pairwise(lines):
        boxed = line.startswith("│") and following.startswith("│")
        text, rest = (line[1:-1], following[1:-1]) if boxed else (line, following)
        width = WIDTH - 2 if boxed else WIDTH - 1
        if not text.strip() or not rest.strip() or line.startswith(("╭", "╰")):
            continue
        start, indent = len(rest) - len(rest.lstrip()), len(text) - len(text.lstrip())
        if boxed and start <= indent:  # not a continuation: the next row starts a new item
            continue
        if not boxed and start != indent:
            continue
        next_word = rest.split()[0]
        if next_word.startswith("["):  # "[default: ...]", "[required]": on a line of their own
            continue
        if len(text.rstrip()) + 1 + len(next_word) <= width:
            found.append(f"{line!r} / {following!r}")
    return found


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(["vto", *p]))
def test_help_fits_80_columns_and_breaks_lines_only_at_the_edge(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)}, terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line) <= WIDTH for line in lines), [line for line in lines if len(line) > WIDTH]
    assert early_breaks(lines) == []
