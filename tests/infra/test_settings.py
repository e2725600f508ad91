"""The settings object: embedded defaults, and no insecure defaults outside embedded mode."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from infra.ledger_store import ledger_options
from infra.queue.base import PipelineOptions
from infra.settings import Settings


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
