"""Prometheus metrics of the API process (its own registry, so tests can build many apps).

``vto api --workers N`` serves from N processes, and a scrape of ``/metrics`` reaches one of
them. So that it shows them all, ``run_http_workers`` runs the workers in prometheus_client's
multiprocess mode (``shared_across_processes``): each keeps its values in files of one
directory (``PROMETHEUS_MULTIPROC_DIR``), and ``exposition`` adds up every worker's counters
and histograms (the gauges: as each declares, ``multiprocess_mode``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

REGISTRY = CollectorRegistry()
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's variable
if os.environ.get(MULTIPROCESS_DIR):  # each metric below opens its value file there
    Path(os.environ[MULTIPROCESS_DIR]).mkdir(parents=True, exist_ok=True)

REQUEST_LATENCY = Histogram(
    "vto_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
# Each process's own count, set when it is scraped: several workers' are added up.
LEDGER_CONFLICTS = Gauge(
    "vto_ledger_conflict_retries",
    "Optimistic-concurrency retries of ledger commands",
    registry=REGISTRY,
    multiprocess_mode="sum",
)
LEDGER_GAVE_UP = Gauge(
    "vto_ledger_conflicts_exhausted",
    "Ledger commands that ran out of retries",
    registry=REGISTRY,
    multiprocess_mode="sum",
)
# Read from the database when scraped (the same whichever worker reads): the newest.
PROJECTION_LAG_EVENTS = Gauge(
    "vto_projection_lag_events",
    "Notifications a projection has not applied",
    ["projection"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
PROJECTION_LAG_SECONDS = Gauge(
    "vto_projection_lag_seconds",
    "Age of the oldest notification a projection has not applied",
    ["projection"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
PROJECTION_STUCK = Gauge(
    "vto_projection_stuck_failures",
    "Failed tries of the event a projection (or the outbox relay) cannot apply; 0 when moving",
    ["projection"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
MAIL_FAILURES = Counter(
    "vto_mail_failures", "Mails (verification, password reset) that could not be delivered", registry=REGISTRY
)
READ_YOUR_WRITES_WAIT = Histogram(
    "vto_read_your_writes_wait_seconds",
    "How long a request waited for the read models to show a write (0: they showed it already)",
    registry=REGISTRY,
    buckets=(0.0, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def exposition() -> bytes:
    """The metrics in Prometheus's text format: this process's, or in multiprocess mode every
    worker's together."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


@contextmanager
def shared_across_processes() -> Iterator[Path]:
    """Run the processes started inside (the API's workers, which inherit the environment)
    in prometheus_client's multiprocess mode: in the directory ``PROMETHEUS_MULTIPROC_DIR``
    names (its value files, ``*.db``, from an earlier run removed first, as prometheus_client
    asks), else in a temporary one, removed afterwards."""
    given = os.environ.get(MULTIPROCESS_DIR)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        yield directory
        return
    directory = Path(tempfile.mkdtemp(prefix="vto-metrics-"))
    os.environ[MULTIPROCESS_DIR] = str(directory)
    try:
        yield directory
    finally:
        del os.environ[MULTIPROCESS_DIR]
        shutil.rmtree(directory, ignore_errors=True)
