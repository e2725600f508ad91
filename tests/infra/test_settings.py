"""The settings object: embedded defaults, and no insecure defaults outside embedded mode."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from infra.ledger_store import ledger_options
from infra.queue.base import PipelineOptions
from infra.settings import WORKER_JOB_MARGIN_S, Settings


def test_embedded_defaults_need_no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VTO_DATABASE_URL", "VTO_JWT_SECRET", "VTO_KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.embedded
    assert settings.generator == "offline"
    assert settings.kafka_bootstrap_servers is None


@pytest.mark.parametrize("secret", [None, "", "secret", "changeme", "short-but-not-default"])
def test_a_configured_database_refuses_a_missing_or_weak_secret(secret: str | None) -> None:
    with pytest.raises(ValidationError, match="VTO_JWT_SECRET"):
        Settings(database_url="postgresql://db/vto", jwt_secret=secret)  # type: ignore[arg-type]


def test_a_configured_database_accepts_a_strong_secret() -> None:
    settings = Settings(database_url="postgresql://db/vto", jwt_secret="x" * 40)  # type: ignore[arg-type]
    assert not settings.embedded


def test_pricing_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VTO_ADMIN_EMAILS", "a@example.com, b@example.com")  # retired: ignored
    monkeypatch.setenv("VTO_TICKET_KINDS", '{"lookbook": "image", "video": "video", "reels": "video"}')
    monkeypatch.setenv("VTO_CREDIT_COSTS", '{"image": 2, "video": 9}')
    settings = Settings()
    assert not hasattr(settings, "admin_emails")
    assert settings.pricing().tickets_for("video") == ("video", "reels")
    assert settings.pricing().cost("video") == 9


@pytest.mark.parametrize(
    ("kinds", "costs"),
    [('{"lookbook": "hologram"}', '{"image": 1}'), ('{"lookbook": "image"}', '{"image": 0}')],
)
def test_inconsistent_pricing_is_refused(monkeypatch: pytest.MonkeyPatch, kinds: str, costs: str) -> None:
    monkeypatch.setenv("VTO_TICKET_KINDS", kinds)
    monkeypatch.setenv("VTO_CREDIT_COSTS", costs)
    with pytest.raises(ValidationError):
        Settings()


def test_pipeline_and_ledger_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VTO_KAFKA_TOPIC_PREFIX", "shop1")
    monkeypatch.setenv("VTO_WORKER_GROUP", "gpu-workers")
    monkeypatch.setenv("VTO_WORKER_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("VTO_SWEEPER_INTERVAL_S", "2.5")
    monkeypatch.setenv("VTO_IDEMPOTENCY_KEY_TTL_S", "3600")
    monkeypatch.setenv("VTO_SNAPSHOT_INTERVAL", "50")
    settings = Settings()
    options = PipelineOptions.from_settings(settings)
    assert options.topics.requested == "shop1.jobs.requested"
    assert options.topics.dead_letter == "shop1.jobs.dead-letter"
    assert (options.worker_group, options.max_attempts, options.sweeper_interval_s) == ("gpu-workers", 5, 2.5)
    ledger = ledger_options(settings)
    assert (ledger.key_ttl, ledger.snapshot_interval) == (timedelta(hours=1), 50)


@pytest.mark.parametrize("prefix", ["", "has space", "a/b", "x" * 101])
def test_a_topic_prefix_kafka_cannot_name_is_refused(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    monkeypatch.setenv("VTO_KAFKA_TOPIC_PREFIX", prefix)
    with pytest.raises(ValidationError):
        Settings()


def test_the_workers_poll_interval_follows_the_job_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VTO_JOB_TIMEOUT_S", "60")
    monkeypatch.setenv("VTO_WORKER_MAX_POLL_RECORDS", "2")
    monkeypatch.setenv("VTO_KAFKA_SESSION_TIMEOUT_MS", "20000")
    monkeypatch.setenv("VTO_KAFKA_HEARTBEAT_INTERVAL_MS", "5000")
    monkeypatch.setenv("VTO_KAFKA_MAX_POLL_RECORDS", "50")
    options = PipelineOptions.from_settings(Settings())
    assert options.job_timeout_s == 60
    worker = options.worker_consumer
    assert worker.max_poll_records == 2
    assert worker.max_poll_interval_ms == 2 * (60 + WORKER_JOB_MARGIN_S) * 1000
    assert (worker.session_timeout_ms, worker.heartbeat_interval_ms) == (20_000, 5_000)
    assert (options.consumer.max_poll_records, options.consumer.max_poll_interval_ms) == (50, 60_000)
    monkeypatch.setenv("VTO_WORKER_MAX_POLL_INTERVAL_MS", "150000")
    assert PipelineOptions.from_settings(Settings()).worker_consumer.max_poll_interval_ms == 150_000


@pytest.mark.parametrize(
    "variables",
    [
        {"VTO_KAFKA_HEARTBEAT_INTERVAL_MS": "10000", "VTO_KAFKA_SESSION_TIMEOUT_MS": "10000"},
        # a worker would be evicted before it abandons a job at the job timeout
        {"VTO_JOB_TIMEOUT_S": "600", "VTO_WORKER_MAX_POLL_INTERVAL_MS": "300000"},
    ],
)
def test_consumer_settings_that_cannot_work_are_refused(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_trusted_proxies_are_addresses_or_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VTO_TRUSTED_PROXIES", raising=False)
    assert Settings().trusted_proxies == ()  # none by default: no X-Forwarded-For is believed
    monkeypatch.setenv("VTO_TRUSTED_PROXIES", " 10.0.0.0/8, 192.0.2.1,,2001:db8::/32 ")
    assert Settings().trusted_proxies == ("10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32")
    monkeypatch.setenv("VTO_TRUSTED_PROXIES", '["172.30.0.0/24"]')
    with pytest.raises(ValidationError, match="VTO_TRUSTED_PROXIES"):
        Settings()  # one form: comma-separated
    for bad in ("proxy.internal", "10.0.0.0/33", "*"):
        monkeypatch.setenv("VTO_TRUSTED_PROXIES", bad)
        with pytest.raises(ValidationError, match="VTO_TRUSTED_PROXIES"):
            Settings()
