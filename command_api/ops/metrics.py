"""Prometheus metrics of the API process (its own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

REQUEST_LATENCY = Histogram(
    "vto_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LEDGER_CONFLICTS = Gauge(
    "vto_ledger_conflict_retries", "Optimistic-concurrency retries of ledger commands", registry=REGISTRY
)
LEDGER_GAVE_UP = Gauge(
    "vto_ledger_conflicts_exhausted", "Ledger commands that ran out of retries", registry=REGISTRY
)
PROJECTION_LAG_EVENTS = Gauge(
    "vto_projection_lag_events",
    "Notifications a projection has not applied",
    ["projection"],
    registry=REGISTRY,
)
PROJECTION_LAG_SECONDS = Gauge(
    "vto_projection_lag_seconds",
    "Age of the oldest notification a projection has not applied",
    ["projection"],
    registry=REGISTRY,
)
PROJECTION_STUCK = Gauge(
    "vto_projection_stuck_failures",
    "Failed tries of the event a projection (or the outbox relay) cannot apply; 0 when moving",
    ["projection"],
    registry=REGISTRY,
)
MAIL_FAILURES = Counter(
    "vto_mail_failures", "Mails (verification, password reset) that could not be delivered", registry=REGISTRY
)
