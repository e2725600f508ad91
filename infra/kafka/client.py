"""Kafka clients (kafka-python) behind the queue interface of ``infra.queue.base``.

JSON values, key = job id (UTF-8). No headers, no idempotent producer, no transactions: the
local test broker is Kafka 0.9 (docs/operations.md, "The messages" and "Local services for the
tests"), which also needs the API version pinned on every client
(``VTO_KAFKA_API_VERSION=0.9``); unset, the clients auto-detect (3.x). Consumers never
auto-commit: the pipeline commits a message's offset after its effect is durable
(at-least-once); a commit the broker refuses raises ``CommitFailed``.

A consumer's poll size, max poll interval, session timeout and heartbeats come from its
``ConsumerConfig`` (the settings ``VTO_KAFKA_*``, ``VTO_WORKER_MAX_POLL_*``). kafka-python
heartbeats from a background thread; a member that does not poll again within its max poll
interval leaves its group (so a job may run that long). Brokers older than 0.10.1 (the local
0.9 test broker) know no max poll interval, and kafka-python then insists on one value for
both; the client keeps the short session timeout for the broker (a killed member is noticed
within it) and gives its heartbeat thread the long max poll interval (``_stretch_poll_interval``).
The one thing 0.9 cannot give: a rebalance while a member is busy waits for it only until its
session timeout; after that its commit fails (counted) and the new owner handles the message
again (deduplicated). Pin the API version for such brokers (``VTO_KAFKA_API_VERSION``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from infra.queue.base import CommitFailed, ConsumerConfig, Message, encode_value

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
    ) -> None:
        self.bootstrap_servers = [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
        self.api_version = (
            parse_api_version(api_version) if isinstance(api_version, str | None) else api_version
        )
        self.client_id = client_id

    def _common(self) -> dict[str, Any]:
        config: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers, "client_id": self.client_id}
        if self.api_version is not None:
            config["api_version"] = self.api_version
        return config

    def _producer(self, **config: Any) -> Any:
        from kafka import KafkaProducer

        return KafkaProducer(**self._common(), enable_idempotence=False, **config)

    def publisher(self) -> KafkaPublisher:
        """A publisher whose producer is created on first use (so a process starts while the
        cluster is unreachable; its first publish raises until it is reachable again)."""
        return KafkaPublisher(
            lambda: self._producer(
                acks="all",
                linger_ms=0,
                max_block_ms=15_000,
                request_timeout_ms=15_000,
                delivery_timeout_ms=60_000,
            )
        )

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

    def consumer_config(self, group_id: str, config: ConsumerConfig | None = None) -> dict[str, Any]:
        """kafka-python's ``KafkaConsumer`` arguments for a member of ``group_id``."""
        kwargs: dict[str, Any] = {
            **self._common(),
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "metadata_max_age_ms": 30_000,
        }
        if config is not None:
            kwargs.update(
                max_poll_records=config.max_poll_records,
                # One value before 0.10.1 (kafka-python's rule); stretched once created.
                max_poll_interval_ms=config.session_timeout_ms
                if self._before_poll_intervals()
                else config.max_poll_interval_ms,
                session_timeout_ms=config.session_timeout_ms,
                heartbeat_interval_ms=config.heartbeat_interval_ms,
            )
        return kwargs

    def _before_poll_intervals(self) -> bool:
        """A broker older than 0.10.1 (KIP-62): no max poll interval in its protocol."""
        return self.api_version is not None and self.api_version < (0, 10, 1)

    def consumer(
        self, topics: Sequence[str], group_id: str, config: ConsumerConfig | None = None
    ) -> KafkaConsumerAdapter:
        """Make the topics exist, then join the group (raises, e.g. ``NoBrokersAvailable``,
        when the cluster cannot be reached: the consume loop tries again)."""
        from kafka import KafkaConsumer

        self.ensure_topics(topics)
        consumer = KafkaConsumer(*topics, **self.consumer_config(group_id, config))
        if config is not None and self._before_poll_intervals():
            _stretch_poll_interval(consumer, config.max_poll_interval_ms)
        return KafkaConsumerAdapter(consumer)

    def close(self) -> None:
        pass


def _stretch_poll_interval(consumer: Any, max_poll_interval_ms: int) -> None:
    """Give a consumer of a pre-0.10.1 broker its long max poll interval where kafka-python
    reads it (the heartbeat thread's check that the member still polls; the join request's
    timeout), leaving the session timeout the broker sees short. kafka-python refuses two
    values at construction only because the old protocol carries one: the session timeout."""
    coordinator = getattr(consumer, "_coordinator", None)
    heartbeat = getattr(coordinator, "heartbeat", None)
    if coordinator is None or heartbeat is None:
        log.warning(
            "kafka-python changed: a member of a pre-0.10.1 broker keeps a poll interval of its session"
        )
        return
    for config in (heartbeat.config, coordinator.config, consumer.config):
        config["max_poll_interval_ms"] = max_poll_interval_ms


class KafkaPublisher:
    def __init__(self, producer_factory: Callable[[], Any]) -> None:
        self._factory = producer_factory
        self._producer: Any = None
        self._lock = threading.Lock()
        self._pending: list[Any] = []

    def _get_producer(self) -> Any:
        with self._lock:
            if self._producer is None:
                self._producer = self._factory()
            return self._producer

    def publish(self, topic: str, key: str | None, value: Mapping[str, Any]) -> None:
        self.publish_raw(topic, key, encode_value(value))

    def publish_raw(self, topic: str, key: str | None, value: bytes) -> None:
        producer = self._get_producer()
        future = producer.send(topic, key=None if key is None else key.encode("utf-8"), value=value)
        with self._lock:
            self._pending.append(future)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every send so far; raise the first failure (so the caller does not move
        its position past a message the broker never took)."""
        self._get_producer().flush(timeout=timeout)
        with self._lock:
            pending, self._pending = self._pending, []
        for future in pending:
            if not future.is_done:
                raise TimeoutError("Kafka did not acknowledge a message in time")
            if future.failed():
                raise future.exception

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=5)


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
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata

        tp = TopicPartition(message.topic, message.partition)
        try:
            self._consumer.commit({tp: OffsetAndMetadata(message.offset + 1, "", -1)})
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance gave the partition to another member, or the coordinator is gone (a
            # broker restart): the message is delivered again (at-least-once; consumers
            # deduplicate). The caller logs and counts it.
            raise CommitFailed(f"commit of {tp.topic}:{tp.partition}@{message.offset}: {exc!r}") from exc

    def rewind(self, message: Message) -> None:
        from kafka import TopicPartition

        tp = TopicPartition(message.topic, message.partition)
        if tp in self._consumer.assignment():
            self._consumer.seek(tp, message.offset)

    def assignment(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def close(self) -> None:
        self._consumer.close(autocommit=False)
