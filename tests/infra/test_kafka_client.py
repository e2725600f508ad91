"""The Kafka client factory's settings (no broker needed)."""

from __future__ import annotations

import pytest

from infra.kafka.client import KafkaQueue, parse_api_version
from infra.queue import InProcessQueue, queue_from_settings
from infra.settings import Settings


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0.9", (0, 9)), ("3.7.0", (3, 7, 0)), ("2", (2,)), (None, None), ("", None), ("auto", None)],
)
def test_api_version_parsing(value: str | None, expected: tuple[int, ...] | None) -> None:
    assert parse_api_version(value) == expected


@pytest.mark.parametrize("value", ["zero.nine", "1.2.3.4"])
def test_bad_api_versions_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="API version"):
        parse_api_version(value)


def test_queue_from_settings_is_in_process_without_kafka() -> None:
    assert isinstance(queue_from_settings(Settings(_env_file=None)), InProcessQueue)  # type: ignore[call-arg]
    kafka = queue_from_settings(
        Settings(_env_file=None, kafka_bootstrap_servers="h1:9092,h2:9092", kafka_api_version="0.9")  # type: ignore[call-arg]
    )
    assert isinstance(kafka, KafkaQueue)
    assert kafka.bootstrap_servers == ["h1:9092", "h2:9092"]
    assert kafka.api_version == (0, 9)
