"""The chaos run (benchmarks/chaos.py), CI-sized: a few hundred randomized requests against the
multi-process deployment on PostgreSQL and the local Kafka broker, with duplicate result
messages, a poison job, one SIGKILL of each kind of process (worker, ingestor, relay,
projector, API), a broker restart and a PostgreSQL restart; it must find no violation."""

from __future__ import annotations

import os
import shutil

import pytest

from benchmarks.chaos import main

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_small_chaos_run_finds_no_violation() -> None:
    if not IN_CI and (shutil.which("java") is None or shutil.which("npm") is None):
        pytest.skip("the chaos run starts a local Kafka broker: it needs java and npm")
    arguments = ["--requests", "300", "--users", "8", "--threads", "4", "--rate", "5"]
    arguments += ["--job-timeout", "20", "--quiesce-timeout", "300", "--seed", "12"]
    assert main(arguments) == 0, "the chaos run found violations (its printout is above)"
