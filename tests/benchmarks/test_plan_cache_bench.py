"""benchmarks/plan_cache_bench.py on a few users: every call in the API's mode runs the generic
plan, and each mode's calls are all counted."""

from __future__ import annotations

from benchmarks import plan_cache_bench
from infra.settings import Settings


def test_a_small_run_reads_on_generic_plans_in_the_apis_mode(pg_server_url: str) -> None:
    results = plan_cache_bench.figures(pg_server_url, users=2, steps=[3, 30], calls=40)
    assert [(events, whole) for events, whole, _ in results] == [
        (3, False),
        (3, True),
        (30, False),
        (30, True),
    ]
    ours = Settings().db_plan_cache_mode
    assert ("auto", ours) == plan_cache_bench.MODES and ours == "force_generic_plan"
    for _, whole, runs in results:
        made = 4 if whole else 40
        assert len(runs[ours]) == len(runs["auto"]) == plan_cache_bench.ROUNDS
        for calls in runs[ours]:
            assert (calls.generic, calls.custom) == (made, 0)
            assert calls.wall_ms > 0
        for calls in runs["auto"]:
            assert calls.generic + calls.custom == made
