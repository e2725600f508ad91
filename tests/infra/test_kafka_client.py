"""The Kafka client factory: its settings (no broker needed); and on each broker under test
(``kafka_broker``: Kafka 0.9 and Tansu): the API version detected, producers idempotent with
``acks=all`` and record headers where the broker allows them, consumer settings taken, and
topics made to exist before a consumer joins."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from infra.kafka.client import LEGACY_API_VERSION, KafkaQueue, detect_api_version, parse_api_version
from infra.queue import InProcessQueue, queue_from_settings
from infra.queue.base import PipelineOptions
from infra.settings import WORKER_JOB_MARGIN_S, Settings
from tests.conftest import KafkaBroker
from tests.pipeline.conftest import drain


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


def test_consumer_settings_reach_kafka_python(kafka_broker: KafkaBroker) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        job_timeout_s=30,
        worker_max_poll_records=2,
        kafka_session_timeout_ms=4_000,
        kafka_heartbeat_interval_ms=1_000,
    )
    options = PipelineOptions.from_settings(settings)
    interval = 2 * (30 + WORKER_JOB_MARGIN_S) * 1000
    modern = KafkaQueue("h1:9092", "3.7.0").consumer_config("g", options.worker_consumer)
    assert {k: modern[k] for k in KEYS} == {
        "max_poll_records": 2,
        "max_poll_interval_ms": interval,
        "session_timeout_ms": 4_000,
        "heartbeat_interval_ms": 1_000,
        "enable_auto_commit": False,
    }
    # Before 0.10.1 kafka-python takes one value; the long interval is set once it is created.
    old = KafkaQueue("h1:9092", "0.9").consumer_config("g", options.worker_consumer)
    assert (old["session_timeout_ms"], old["max_poll_interval_ms"]) == (4_000, 4_000)
    ingestor = KafkaQueue("h1:9092", "3.7.0").consumer_config("g", options.consumer)
    assert (ingestor["max_poll_records"], ingestor["max_poll_interval_ms"]) == (100, 60_000)

    # ... and a real consumer on each broker takes them (its session fits the broker; the
    # long interval is the protocol's from 0.10.1, the heartbeat thread's before).
    queue = KafkaQueue(kafka_broker.bootstrap)
    topic = f"t{uuid.uuid4().hex[:10]}.jobs.requested"
    adapter = queue.consumer([topic], f"g{uuid.uuid4().hex[:8]}", options.worker_consumer)
    try:
        config = adapter._consumer.config
        assert config["max_poll_records"] == 2
        assert (config["session_timeout_ms"], config["heartbeat_interval_ms"]) == (4_000, 1_000)
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


def test_clients_racing_to_create_a_topic_all_get_its_partitions(kafka_broker: KafkaBroker) -> None:
    """Consumers of one group start together and each makes the broker create their topic:
    the losers of that race (Kafka 0.9 answers them InvalidTopicError) ask again."""
    from kafka import KafkaProducer

    queue = KafkaQueue(kafka_broker.bootstrap)
    for _ in range(3):
        topic = f"t{uuid.uuid4().hex[:10]}.jobs.requested"
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: queue.ensure_topics([topic], timeout=20), range(4)))
        producer = KafkaProducer(**queue.client_config(), enable_idempotence=False)
        try:
            assert producer.partitions_for(topic)  # the topic exists, with its partitions
        finally:
            producer.close(timeout=5)


def test_the_api_version_is_detected_never_pinned(kafka_broker: KafkaBroker) -> None:
    """A broker that predates ApiVersions (the local 0.9) is recognised by the probe; one that
    knows it (Tansu, Kafka 3.x) is left to kafka-python, which negotiates every request."""
    expected = LEGACY_API_VERSION if kafka_broker.name == "kafka-0.9" else None
    assert detect_api_version([kafka_broker.bootstrap]) == expected
    queue = KafkaQueue(kafka_broker.bootstrap)
    assert queue.api_version is None
    assert queue.client_api_version() == expected
    assert ("api_version" in queue.client_config()) == (expected is not None)


def test_a_pinned_version_is_used_without_asking_and_an_absent_broker_raises() -> None:
    from kafka.errors import KafkaConnectionError

    assert KafkaQueue("127.0.0.1:9", "3.7").client_api_version() == (3, 7)  # nothing listens there
    with pytest.raises(KafkaConnectionError, match="no Kafka broker answered"):
        KafkaQueue("127.0.0.1:9").client_api_version()


def test_producers_idempotent_with_headers_where_the_broker_allows(kafka_broker: KafkaBroker) -> None:
    """From Kafka 0.11 (Tansu): an idempotent producer (the broker gave it a producer id) with
    ``acks=all`` whose records carry their headers. On 0.9: ``acks=all`` alone, the value
    without its headers (counted), the message itself delivered all the same."""
    queue = KafkaQueue(kafka_broker.bootstrap)
    modern = kafka_broker.name != "kafka-0.9"
    topic = f"t{uuid.uuid4().hex[:10]}.headers"
    publisher = queue.publisher()
    try:
        publisher.publish(topic, "k", {"n": 1}, {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
        publisher.flush(20)
        producer = publisher._producer
        assert producer.config["acks"] in ("all", -1)
        assert (publisher.idempotent, publisher.carries_headers) == (modern, modern)
        assert publisher.dropped_headers == (0 if modern else 1)
        if modern:
            assert producer._transaction_manager.producer_id_and_epoch.producer_id >= 0
    finally:
        publisher.close()
    (record,) = drain(queue, topic)
    assert record.value == b'{"n":1}'
    expected = [("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")] if modern else []
    assert list(record.headers or []) == expected
