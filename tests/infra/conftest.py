"""Fixtures of the ``infra`` tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from infra import cli
from infra.settings import get_settings


@pytest.fixture
def vto(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Runs ``vto ...`` with the settings pointing at the test database (as an operator's
    shell pointing at the server's database would)."""
    monkeypatch.setenv("VTO_DATABASE_URL", pg_url)
    monkeypatch.setenv("VTO_JWT_SECRET", "x" * 40)
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli.app, list(args))

    yield run
    get_settings.cache_clear()
