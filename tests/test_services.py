"""``command_api.services``: what an API process holds, and how its reads wait for the
projections (read-your-writes)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from command_api.services import build_services
from infra.settings import Settings
from tests.factories import job_request, new_user


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", **overrides)  # type: ignore[call-arg]


@pytest.fixture
def slow_batches(tmp_path: Path, pg_url: str) -> Iterator[Any]:
    """An API process whose projections, under a steady stream of appends, start a batch 1 s
    after the last one unless a reader waits."""
    built = build_services(_settings(tmp_path, projection_batch_interval_s=1.0), pg_url, migrate=False)
    try:
        yield built
    finally:
        built.close()


def test_a_read_after_a_write_does_not_wait_for_the_batch_interval(slow_batches: Any) -> None:
    ledger = slow_batches.ledger
    user = new_user(ledger, credits=5)
    first = ledger.request_job(user, uuid4(), "image", job_request()).position
    assert slow_batches.wait_for(first, timeout=10)  # a batch has just started: the interval runs
    second = ledger.request_job(user, uuid4(), "image", job_request()).position
    started = time.monotonic()
    assert slow_batches.wait_for(second, timeout=10)
    assert time.monotonic() - started < 0.5  # without the nudge: about 1 s
    # the first read's nudge served the second too: the runners still hear readers
    assert slow_batches.nudge is not None and slow_batches.nudge.sent == first


def test_no_nudge_where_readers_have_nothing_to_bring_forward(tmp_path: Path, pg_url: str) -> None:
    built = build_services(
        _settings(tmp_path, projection_batch_interval_s=0.01, projection_wanted_batch_interval_s=0.01),
        pg_url,
        migrate=False,
        run_projections=False,
    )
    try:
        assert built.nudge is None
    finally:
        built.close()
