"""The pipeline's message queue: Kafka when ``VTO_KAFKA_BOOTSTRAP_SERVERS`` is set, else an
in-process queue with the same interface (``vto serve`` on the embedded defaults)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infra.queue.base import (
    CommitFailed,
    Consumer,
    ConsumerConfig,
    Message,
    MessageQueue,
    PipelineOptions,
    Publisher,
    Topics,
    encode_value,
)
from infra.queue.memory import InProcessQueue

if TYPE_CHECKING:
    from infra.settings import Settings

__all__ = [
    "CommitFailed",
    "Consumer",
    "ConsumerConfig",
    "InProcessQueue",
    "Message",
    "MessageQueue",
    "PipelineOptions",
    "Publisher",
    "Topics",
    "encode_value",
    "queue_from_settings",
]


def queue_from_settings(settings: Settings) -> MessageQueue:
    """Kafka (``VTO_KAFKA_BOOTSTRAP_SERVERS``, ``VTO_KAFKA_API_VERSION``) or, when unset, a new
    in-process queue (share that one object between the threads of one process)."""
    if settings.kafka_bootstrap_servers:
        from infra.kafka.client import KafkaQueue

        return KafkaQueue(settings.kafka_bootstrap_servers, settings.kafka_api_version)
    return InProcessQueue()
