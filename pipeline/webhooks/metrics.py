"""Prometheus metrics of webhook delivery (their own registry: ``vto webhooks`` serves it on
``VTO_WEBHOOKS_METRICS_PORT``, and the API's ``/metrics`` includes it, which in ``vto serve``
is where the dispatcher runs). The counters are the process's own; the backlog gauges are
read from the database (by the sender every second, by the API at each scrape), so every
process shows the same backlog."""

from __future__ import annotations

from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

DELIVERIES = Counter(
    "vto_webhook_deliveries",
    "Webhook messages that reached an outcome: delivered (2xx), failed (the retry schedule ran "
    "out), stopped (the endpoint answered 410 Gone)",
    ["outcome"],
    registry=REGISTRY,
)
ATTEMPTS = Counter(
    "vto_webhook_attempts",
    "Webhook delivery attempts by result: success, http_status (any other status), timeout, "
    "network (connection failed), refused (an address webhooks may not go to)",
    ["result"],
    registry=REGISTRY,
)
ATTEMPT_SECONDS = Histogram(
    "vto_webhook_attempt_duration_seconds",
    "Duration of webhook delivery attempts",
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
OLDEST_UNDELIVERED = Gauge(
    "vto_webhook_oldest_undelivered_seconds",
    "Age of the oldest webhook message not delivered yet (0 when none waits)",
    registry=REGISTRY,
)
PENDING = Gauge("vto_webhook_pending_messages", "Webhook messages not delivered yet", registry=REGISTRY)
IN_FLIGHT = Gauge("vto_webhook_in_flight", "Webhook attempts in progress in this process", registry=REGISTRY)


PENDING_STATS = (
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) "
    "FROM webhook_messages WHERE state = 'pending'"
)


def show(pending: int, oldest_s: float) -> None:
    PENDING.set(pending)
    OLDEST_UNDELIVERED.set(oldest_s)


def refresh(conn: psycopg.Connection[Any]) -> None:
    """The backlog gauges, from the database."""
    row = conn.execute(PENDING_STATS).fetchone()
    if row is not None:
        show(int(row[0]), float(row[1]))
