"""A check at the end of every test run: each status the API answered during the run, on each
operation, is documented for that operation in the OpenAPI document.

The API process measures every request by method, route template and status
(``command_api.ops.metrics.REQUEST_LATENCY``); the tests run many apps in this one process,
all with the same routes, so the metric holds every answer the run saw. What no operation of
the document names (``/docs``, unknown paths) and 500 (a bug, which the fuzz test forbids)
are left out. Registered by ``tests/conftest.py`` (``pytest_sessionfinish``)."""

from __future__ import annotations

from typing import Any

import pytest

from command_api.ops.metrics import REGISTRY
from command_api.ops.middleware import template_label


def answered() -> set[tuple[str, str, int]]:
    """(method, route label, status) of every request the apps of this process answered."""
    found = set()
    for metric in REGISTRY.collect():
        if metric.name != "vto_http_request_duration_seconds":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.value > 0:
                labels = sample.labels
                found.add((labels["method"], labels["route"], int(labels["status"])))
    return found


def documented() -> dict[tuple[str, str], set[int]]:
    """(method, route label) -> the statuses the OpenAPI document gives that operation."""
    from command_api.app import create_app

    statuses: dict[tuple[str, str], set[int]] = {}
    for path, operations in create_app().openapi()["paths"].items():
        for method, operation in operations.items():
            codes = {int(s) for s in operation.get("responses", {}) if s.isdigit()}
            statuses.setdefault((method.upper(), template_label(path)), set()).update(codes)
    return statuses


def undocumented() -> list[str]:
    known = documented()
    return sorted(
        f"{method} {route}: {status}"
        for method, route, status in answered()
        if (method, route) in known and status != 500 and status not in known[(method, route)]
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: Any) -> None:
    missing = undocumented()
    if not missing:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = (
        "statuses the API answered during this run that its OpenAPI document does not give "
        "(add them in command_api/reference/openapi.py):\n  " + "\n  ".join(missing)
    )
    if reporter is not None:
        reporter.write_sep("=", "undocumented statuses", red=True)
        reporter.write_line(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
