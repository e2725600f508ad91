"""Kafka clients (kafka-python) behind the queue interface of ``infra.queue.base``.

JSON values, key = job id (UTF-8). No headers, no idempotent producer, no transactions: the
local test broker is Kafka 0.9 (DESIGN.md sections 3 and 6), which also needs the API version
pinned on every client (``VTO_KAFKA_API_VERSION=0.9``); unset, the clients auto-detect (3.x).
Consumers never auto-commit: the pipeline commits a message's offset after its effect is
durable (at-least-once)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from infra.queue.base import Message, encode_value

log = logging.getLogger(__name__)


def parse_api_version(value: str | None) -> tuple[int, ...] | None:
    """``"0.9"`` -> ``(0, 9)``, ``"3.7.0"`` -> ``(3, 7, 0)``; None or ``""`` or ``"auto"`` ->
    None (auto-detect)."""
    if value is None or value.strip().lower() in ("", "auto"):
        return None
    try:
        parts = tuple(int(p) for p in value.strip().split("."))
    except ValueError:
        raise ValueError(f"Kafka API version must look like 0.9 or 3.7.0, got {value!r}") from None
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"Kafka API version must look like 0.9 or 3.7.0, got {value!r}")
    return parts


class KafkaQueue:
    """Factory of producers and consumers for one cluster."""

    def __init__(
        self,
        bootstrap_servers: str,
        api_version: str | tuple[int, ...] | None = None,
        *,
        client_id: str = "vto",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
    ) -> None:
        self.bootstrap_servers = [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
        self.api_version = (
            parse_api_version(api_version) if isinstance(api_version, str | None) else api_version
        )
        self.client_id = client_id
        # Kafka 0.9 refuses sessions above group.max.session.timeout.ms (30 s there).
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms

    def _common(self) -> dict[str, Any]:
        config: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers, "client_id": self.client_id}
        if self.api_version is not None:
            config["api_version"] = self.api_version
        return config

    def _producer(self, **config: Any) -> Any:
        from kafka import KafkaProducer

        return KafkaProducer(**self._common(), enable_idempotence=False, **config)

    def publisher(self) -> KafkaPublisher:
        producer = self._producer(
            acks="all",
            linger_ms=0,
            max_block_ms=15_000,
            request_timeout_ms=15_000,
            delivery_timeout_ms=60_000,
        )
        return KafkaPublisher(producer)

    def ensure_topics(self, topics: Sequence[str], timeout: float = 15.0) -> None:
        """Wait until the cluster knows the partitions of every topic, asking for each by name
        (which makes a broker with ``auto.create.topics.enable`` create it). A group member
        that subscribes before its topic exists is assigned nothing, and kafka-python only
        notices the new partitions at its next metadata refresh; so consumers call this first.

        Two clients that make a broker create the same topic at once race: Kafka 0.9 answers the
        loser ``InvalidTopicError`` (the new topic "collides" with itself), so that answer is
        asked again, with back-off. A topic still unknown after ``timeout`` is logged and left
        to that refresh; this never raises for a topic the cluster is slow to create."""
        from kafka.errors import InvalidTopicError, KafkaTimeoutError

        unsettled = (InvalidTopicError, KafkaTimeoutError)
        producer = self._producer(max_block_ms=int(timeout * 1000))
        try:
            for topic in topics:
                retrying = Retrying(
                    stop=stop_after_delay(timeout),
                    wait=wait_exponential(multiplier=0.05, max=1.0),
                    retry=retry_if_exception_type(unsettled),
                    reraise=True,
                )
                try:
                    retrying(producer.partitions_for, topic)
                except unsettled as exc:
                    log.warning(
                        "Kafka has no partitions for topic %s yet (%s); subscribing anyway", topic, exc
                    )
        finally:
            producer.close(timeout=5)

    def consumer(self, topics: Sequence[str], group_id: str) -> KafkaConsumerAdapter:
        from kafka import KafkaConsumer

        self.ensure_topics(topics)
        consumer = KafkaConsumer(
            *topics,
            **self._common(),
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            metadata_max_age_ms=30_000,
        )
        return KafkaConsumerAdapter(consumer)

    def close(self) -> None:
        pass


class KafkaPublisher:
    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._lock = threading.Lock()
        self._pending: list[Any] = []

    def publish(self, topic: str, key: str | None, value: Mapping[str, Any]) -> None:
        self.publish_raw(topic, key, encode_value(value))

    def publish_raw(self, topic: str, key: str | None, value: bytes) -> None:
        future = self._producer.send(topic, key=None if key is None else key.encode("utf-8"), value=value)
        with self._lock:
            self._pending.append(future)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every send so far; raise the first failure (so the caller does not move
        its position past a message the broker never took)."""
        self._producer.flush(timeout=timeout)
        with self._lock:
            pending, self._pending = self._pending, []
        for future in pending:
            if not future.is_done:
                raise TimeoutError("Kafka did not acknowledge a message in time")
            if future.failed():
                raise future.exception

    def close(self) -> None:
        self._producer.close(timeout=5)


class KafkaConsumerAdapter:
    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer

    def poll(self, timeout: float, max_records: int = 100) -> list[Message]:
        records = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        batch = [
            Message(
                r.topic,
                r.partition,
                r.offset,
                None if r.key is None else r.key.decode("utf-8", errors="replace"),
                r.value if r.value is not None else b"",
            )
            for tp in sorted(records, key=lambda tp: (tp.topic, tp.partition))
            for r in records[tp]
        ]
        return batch

    def commit(self, message: Message) -> None:
        from kafka import TopicPartition
        from kafka.errors import CommitFailedError
        from kafka.structs import OffsetAndMetadata

        tp = TopicPartition(message.topic, message.partition)
        try:
            self._consumer.commit({tp: OffsetAndMetadata(message.offset + 1, "", -1)})
        except CommitFailedError:
            # The group rebalanced: another member now owns the partition and will get the
            # message again (at-least-once; consumers deduplicate).
            log.warning("commit of %s:%s@%s failed after a rebalance", *tp, message.offset)

    def rewind(self, message: Message) -> None:
        from kafka import TopicPartition

        tp = TopicPartition(message.topic, message.partition)
        if tp in self._consumer.assignment():
            self._consumer.seek(tp, message.offset)

    def assignment(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def close(self) -> None:
        self._consumer.close(autocommit=False)
