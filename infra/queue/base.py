"""The message queue interface the pipeline uses, with two implementations: Kafka
(``infra.kafka.client.KafkaQueue``) and an in-process queue (``infra.queue.memory``) for
``vto serve`` on the embedded defaults.

Semantics are Kafka's, reduced to what the pipeline needs: keyed messages (key = job id, so a
job's messages stay in one partition, in order), JSON values, consumer groups that split the
partitions of a topic between their members, and at-least-once delivery: a consumer commits
a message's offset only after its effect is durable; whatever was not committed is delivered
again (after a restart, a rebalance, or ``rewind``). Every consumer deduplicates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from infra.settings import Settings

Headers = Mapping[str, str]  # record headers to send (``infra.tracing``: the trace context)


@dataclass(frozen=True)
class Message:
    """One delivered message: where it came from, its key, its raw value (bytes; decode
    with ``json_value`` so an undecodable message can go to the dead-letter topic) and its
    record headers as delivered (none from a broker older than Kafka 0.11)."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> str | None:
        """The last header ``name`` as text; None when absent or not UTF-8."""
        for key, raw in reversed(self.headers):
            if key == name:
                try:
                    return raw.decode("utf-8")
                except UnicodeDecodeError:
                    return None
        return None

    def json_value(self) -> Any:
        """The value as JSON; raises ``ValueError`` (``json.JSONDecodeError`` or
        ``UnicodeDecodeError``) when it is not."""
        return json.loads(self.value.decode("utf-8"))


def encode_value(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str).encode("utf-8")


class CommitFailed(Exception):
    """The broker did not take a consumer's offset (its group rebalanced, or the coordinator
    is unreachable): the message will be delivered again (its effect is already durable and
    every consumer deduplicates). The consume loop logs and counts it."""


@dataclass(frozen=True)
class ConsumerConfig:
    """How a consumer polls and stays in its group (from the settings, where the defaults and
    meanings are: ``infra.settings.Settings``, ``VTO_KAFKA_*`` and ``VTO_WORKER_MAX_POLL_*``)."""

    max_poll_records: int
    max_poll_interval_ms: int
    session_timeout_ms: int
    heartbeat_interval_ms: int


class Publisher(Protocol):
    def publish(
        self, topic: str, key: str | None, value: Mapping[str, Any], headers: Headers | None = None
    ) -> None:
        """Send one JSON message (asynchronously; ``flush`` waits until it is acknowledged),
        with ``headers`` where the queue carries them (a Kafka broker older than 0.11 does not:
        they are left out)."""
        ...

    def publish_raw(
        self, topic: str, key: str | None, value: bytes, headers: Headers | None = None
    ) -> None: ...

    def flush(self, timeout: float | None = None) -> None:
        """Block until every message published so far is acknowledged; raise if one failed."""
        ...

    def close(self) -> None: ...


class Consumer(Protocol):
    def poll(self, timeout: float, max_records: int = 100) -> list[Message]:
        """Messages after this consumer's position in its assigned partitions (maybe none)."""
        ...

    def commit(self, message: Message) -> None:
        """Record that ``message`` (and everything before it in its partition) is done;
        raise ``CommitFailed`` when the broker did not take it."""
        ...

    def rewind(self, message: Message) -> None:
        """Deliver ``message`` (and what follows it in its partition) again on a later poll."""
        ...

    def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this member of its group reads now."""
        ...

    def close(self) -> None: ...


class MessageQueue(Protocol):
    def publisher(self) -> Publisher: ...

    def consumer(
        self, topics: Sequence[str], group_id: str, config: ConsumerConfig | None = None
    ) -> Consumer:
        """A member of ``group_id``; ``config`` None: the client's own defaults."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Topics:
    """The pipeline's topic names (docs/operations.md "The messages"): ``<prefix>.jobs.requested`` and so on,
    the prefix being the setting ``VTO_KAFKA_TOPIC_PREFIX``."""

    requested: str
    results: str
    progress: str
    dead_letter: str

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        return cls(
            requested=f"{prefix}.jobs.requested",
            results=f"{prefix}.jobs.results",
            progress=f"{prefix}.jobs.progress",
            dead_letter=f"{prefix}.jobs.dead-letter",
        )


@dataclass(frozen=True)
class PipelineOptions:
    """Options of the relay, worker, ingestor and sweeper, taken from the settings (where
    their defaults and meanings are: ``infra.settings.Settings``)."""

    topics: Topics
    worker_group: str
    ingestor_group: str
    max_attempts: int  # attempts of a job in all, across deliveries and restarts
    retry_backoff_s: float  # doubled after each attempt
    retry_backoff_max_s: float
    poll_timeout_s: float
    sweeper_interval_s: float
    relay_poll_interval_s: float
    job_timeout_s: float  # a worker abandons a job still generating after this long
    worker_consumer: ConsumerConfig  # the workers' polls: few records, long interval
    consumer: ConsumerConfig  # the ingestor's and the progress recorder's

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineOptions:
        return cls(
            topics=Topics.with_prefix(settings.kafka_topic_prefix),
            worker_group=settings.worker_group,
            ingestor_group=settings.ingestor_group,
            max_attempts=settings.worker_max_attempts,
            retry_backoff_s=settings.worker_retry_backoff_s,
            retry_backoff_max_s=settings.worker_retry_backoff_max_s,
            poll_timeout_s=settings.queue_poll_timeout_s,
            sweeper_interval_s=settings.sweeper_interval_s,
            relay_poll_interval_s=settings.relay_poll_interval_s,
            job_timeout_s=settings.job_timeout_s,
            worker_consumer=ConsumerConfig(
                max_poll_records=settings.worker_max_poll_records,
                max_poll_interval_ms=settings.worker_poll_interval_ms(),
                session_timeout_ms=settings.kafka_session_timeout_ms,
                heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            ),
            consumer=ConsumerConfig(
                max_poll_records=settings.kafka_max_poll_records,
                max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
                session_timeout_ms=settings.kafka_session_timeout_ms,
                heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            ),
        )
