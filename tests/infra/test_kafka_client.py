"""The Kafka client factory: its settings (no broker needed), and topics made to exist before a
consumer joins (the local broker)."""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from infra.kafka.client import KafkaQueue, parse_api_version
from infra.queue import InProcessQueue, queue_from_settings
from infra.queue.base import PipelineOptions
from infra.settings import WORKER_JOB_MARGIN_S, Settings


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


def test_consumer_settings_reach_kafka_python(kafka_bootstrap: str) -> None:
    settings = Settings(_env_file=None, job_timeout_s=30, worker_max_poll_records=2)  # type: ignore[call-arg]
    options = PipelineOptions.from_settings(settings)
    interval = 2 * (30 + WORKER_JOB_MARGIN_S) * 1000
    modern = KafkaQueue("h1:9092", "3.7.0").consumer_config("g", options.worker_consumer)
    assert {k: modern[k] for k in KEYS} == {
        "max_poll_records": 2,
        "max_poll_interval_ms": interval,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 3_000,
        "enable_auto_commit": False,
    }
    # Before 0.10.1 kafka-python takes one value; the long interval is set once it is created.
    old = KafkaQueue("h1:9092", "0.9").consumer_config("g", options.worker_consumer)
    assert (old["session_timeout_ms"], old["max_poll_interval_ms"]) == (10_000, 10_000)
    ingestor = KafkaQueue("h1:9092", "3.7.0").consumer_config("g", options.consumer)
    assert (ingestor["max_poll_records"], ingestor["max_poll_interval_ms"]) == (100, 60_000)

    # ... and a real consumer on the local broker takes them (its session fits the broker).
    queue = KafkaQueue(kafka_bootstrap, os.environ.get("VTO_TEST_KAFKA_API_VERSION", "0.9"))
    topic = f"t{uuid.uuid4().hex[:10]}.jobs.requested"
    adapter = queue.consumer([topic], f"g{uuid.uuid4().hex[:8]}", options.worker_consumer)
    try:
        config = adapter._consumer.config
        assert config["max_poll_records"] == 2
        assert (config["session_timeout_ms"], config["heartbeat_interval_ms"]) == (10_000, 3_000)
        assert adapter._consumer._coordinator.heartbeat.config["max_poll_interval_ms"] == interval
        deadline = time.monotonic() + 30
        while not adapter.assignment():  # joined its group: the broker accepted the session
            assert time.monotonic() < deadline, "the consumer never joined its group"
            adapter.poll(0.2)
    finally:
        adapter.close()


KEYS = (
    "max_poll_records",
    "max_poll_interval_ms",
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "enable_auto_commit",
)


def test_clients_racing_to_create_a_topic_all_get_its_partitions(kafka_bootstrap: str) -> None:
    """Consumers of one group start together and each makes the broker create their topic:
    the losers of that race (Kafka 0.9 answers them InvalidTopicError) ask again."""
    from kafka import KafkaProducer

    queue = KafkaQueue(kafka_bootstrap, os.environ.get("VTO_TEST_KAFKA_API_VERSION", "0.9"))
    for _ in range(3):
        topic = f"t{uuid.uuid4().hex[:10]}.jobs.requested"
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: queue.ensure_topics([topic], timeout=20), range(4)))
        producer = KafkaProducer(**queue._common())
        try:
            assert producer.partitions_for(topic)  # the topic exists, with its partitions
        finally:
            producer.close(timeout=5)
