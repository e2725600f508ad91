"""Kafka clients (kafka-python) behind the queue interface of ``infra.queue.base``.

JSON values, key = job id (UTF-8), record headers where the broker carries them. Consumers
never auto-commit: the pipeline commits a message's offset after its effect is durable
(at-least-once); a commit the broker refuses raises ``CommitFailed``.

The API version is detected, never pinned (docs/kafka.md): kafka-python asks a broker that
knows ApiVersions (KIP-35, Kafka 0.10 and later) for the version of every request; one older
than that (the local 0.9 test broker), which kafka-python 3 cannot bootstrap from, is
recognised by ``detect_api_version`` and given ``(0, 9)``. ``VTO_KAFKA_API_VERSION`` still
pins one where an operator must. What follows from the version:
- producers: ``acks=all`` always; idempotent (kafka-python's default, a producer id from the
  broker, so a retried send is written once) from 0.11; record headers from 0.11, so the
  request id and the W3C ``traceparent`` travel with each message (``infra.tracing``); a
  pre-0.11 producer sends the value alone (``KafkaPublisher.carries_headers`` is False).
- consumers: a consumer's poll size, max poll interval, session timeout and heartbeats come
  from its ``ConsumerConfig`` (the settings ``VTO_KAFKA_*``, ``VTO_WORKER_MAX_POLL_*``).
  kafka-python heartbeats from a background thread; a member that does not poll again within
  its max poll interval leaves its group (so a job may run that long), and one whose
  heartbeats stop (a killed process) leaves it after its session timeout. From 0.10.1
  (KIP-62) the broker knows both: a rebalance waits up to the max poll interval for a member
  busy with a job. Brokers older than that know only the session timeout, and kafka-python
  then insists on one value for both; the client keeps the short session timeout for the
  broker and gives its heartbeat thread the long max poll interval
  (``_stretch_poll_interval``). The one thing 0.9 cannot give: a rebalance while a member is
  busy waits for it only until its session timeout; after that its commit fails (counted)
  and the new owner handles the message again (deduplicated)."""

from __future__ import annotations

import logging
import socket
import struct
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


# Before 0.10 (KIP-35) a broker knows no ApiVersions request: it closes the connection.
LEGACY_API_VERSION = (0, 9)
# From 0.11 (KIP-98, KIP-82): the idempotent producer and record headers.
HEADERS_SINCE = (0, 11)
_API_VERSIONS_KEY = 18
_METADATA_KEY = 3


def _frame(api_key: int, correlation_id: int, body: bytes = b"") -> bytes:
    """A version-0 request of the Kafka protocol: size, header (key, version, correlation id,
    client id), body."""
    client_id = b"vto-version-probe"
    request = struct.pack(">hhih", api_key, 0, correlation_id, len(client_id)) + client_id + body
    return struct.pack(">i", len(request)) + request


def _probe(server: str, timeout: float) -> tuple[int, ...] | None:
    """Send ApiVersions (correlation id 1) then Metadata for all topics (2) on one connection.
    A broker answers a connection's requests in order: a modern one answers 1 first; one that
    predates KIP-35 skips the request it does not know (Kafka 0.9 logs it and answers nothing)
    and answers 2. Raises ``OSError`` when the broker cannot be reached or says nothing."""
    host, _, port = server.rpartition(":")
    address = (host.strip("[]") or "localhost", int(port or 9092))
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(_frame(_API_VERSIONS_KEY, 1) + _frame(_METADATA_KEY, 2, struct.pack(">i", 0)))
        header = b""
        while len(header) < 8:
            chunk = sock.recv(8 - len(header))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            header += chunk
    correlation_id = struct.unpack(">ii", header)[1]
    if correlation_id not in (1, 2):
        raise ConnectionError(f"an answer to no request of ours (correlation id {correlation_id})")
    return None if correlation_id == 1 else LEGACY_API_VERSION


def detect_api_version(bootstrap_servers: Sequence[str], timeout: float = 10.0) -> tuple[int, ...] | None:
    """``None`` when the cluster answers ApiVersions (Kafka 0.10 and later: kafka-python
    negotiates every request's version itself), ``LEGACY_API_VERSION`` when it predates KIP-35
    (``_probe``). kafka-python 3 no longer recognises such brokers (it cannot bootstrap from
    them); this probe is the few bytes of the protocol it takes. Raises
    ``KafkaConnectionError`` when no bootstrap server answers (the caller tries again later)."""
    from kafka.errors import KafkaConnectionError

    failures = []
    for server in bootstrap_servers:
        try:
            return _probe(server, timeout)
        except (OSError, ValueError) as exc:
            failures.append(f"{server}: {exc}")
    raise KafkaConnectionError(f"no Kafka broker answered ({'; '.join(failures)})")


class KafkaQueue:
    """Factory of producers and consumers for one cluster. ``api_version`` pins the clients'
    version (``VTO_KAFKA_API_VERSION``); None: detected when the first client is made."""

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
        self._detected: tuple[tuple[int, ...] | None] | None = None  # (version,) once probed
        self._detect_lock = threading.Lock()

    def client_api_version(self) -> tuple[int, ...] | None:
        """The version every client is given: the pinned one, or the probed one (``None``:
        kafka-python negotiates it; see ``detect_api_version``). Probed once, on first use;
        raises ``KafkaConnectionError`` while the cluster cannot be reached."""
        if self.api_version is not None:
            return self.api_version
        with self._detect_lock:
            if self._detected is None:
                self._detected = (detect_api_version(self.bootstrap_servers),)
                if self._detected[0] is not None:
                    log.info(
                        "Kafka at %s predates ApiVersions (KIP-35): clients speak API %s",
                        ",".join(self.bootstrap_servers),
                        ".".join(map(str, self._detected[0])),
                    )
            return self._detected[0]

    def client_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers, "client_id": self.client_id}
        version = self.client_api_version()
        if version is not None:
            config["api_version"] = version
        return config

    def _producer(self, **config: Any) -> Any:
        """A producer with ``acks=all``; idempotent wherever the broker can be (kafka-python's
        default from 0.11; set off explicitly below that, where it would only warn)."""
        from kafka import KafkaProducer

        common = self.client_config()
        if common.get("api_version", HEADERS_SINCE) < HEADERS_SINCE:
            config.setdefault("enable_idempotence", False)
        return KafkaProducer(**common, acks="all", **config)

    def publisher(self) -> KafkaPublisher:
        """A publisher whose producer is created on first use (so a process starts while the
        cluster is unreachable; its first publish raises until it is reachable again)."""
        return KafkaPublisher(
            lambda: self._producer(
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
        producer = self._producer(max_block_ms=int(timeout * 1000), enable_idempotence=False)
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
            **self.client_config(),
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
        version = self.client_api_version()
        return version is not None and version < (0, 10, 1)

    def consumer(
        self, topics: Sequence[str], group_id: str, config: ConsumerConfig | None = None
    ) -> KafkaConsumerAdapter:
        """Make the topics exist, then join the group (raises, e.g. ``KafkaConnectionError``,
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
        self.api_version: tuple[int, ...] | None = None  # the producer's, known once it exists
        self.carries_headers: bool | None = None
        self.idempotent: bool | None = None
        self.dropped_headers = 0  # messages sent without their headers (a pre-0.11 broker)

    def _get_producer(self) -> Any:
        with self._lock:
            if self._producer is None:
                producer = self._factory()
                version = self.api_version = tuple(producer.config["api_version"])
                self.carries_headers = version >= HEADERS_SINCE
                self.idempotent = bool(producer.config["enable_idempotence"])
                log.info(
                    "Kafka producer on API %s: acks=all, idempotent %s, record headers %s",
                    ".".join(map(str, version)),
                    "yes" if self.idempotent else "no",
                    "yes" if self.carries_headers else "no (a trace stops at the sender)",
                )
                self._producer = producer
            return self._producer

    def publish(
        self, topic: str, key: str | None, value: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        self.publish_raw(topic, key, encode_value(value), headers)

    def publish_raw(
        self, topic: str, key: str | None, value: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        producer = self._get_producer()
        record_headers = None
        if headers:
            if self.carries_headers:
                record_headers = [(name, text.encode("utf-8")) for name, text in headers.items()]
            else:
                self.dropped_headers += 1
        future = producer.send(
            topic, key=None if key is None else key.encode("utf-8"), value=value, headers=record_headers
        )
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
                tuple((name, value or b"") for name, value in r.headers or ()),
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
