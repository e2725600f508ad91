"""The consume loop shared by the worker and the ingestor: poll, handle each message, commit
its offset only after ``handle`` returned (its effect is durable), at-least-once.

When ``handle`` raises (database or broker unavailable...), the message is rewound, the rest
of its partition's batch is left for later (so no later offset is committed past it), and the
loop backs off before polling again. Undecodable messages are not errors here: the handlers
send them to the dead-letter topic and return."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Self

from tenacity import retry_if_result

from generator_worker.pipeline.messages import DeadLetter
from infra.queue.base import Consumer, Message, MessageQueue, PipelineOptions, Publisher
from infra.threads import BackgroundLoop, Stopping, backoff

__all__ = ["ConsumerLoop", "Stopping", "TopicConsumer", "send_to_dead_letter"]

log = logging.getLogger(__name__)


class ConsumerLoop(BackgroundLoop):
    """Polls in a loop; a handler raises ``Stopping`` when the process stops while it works:
    the message is left uncommitted."""

    def __init__(
        self,
        name: str,
        consumer_factory: Callable[[], Consumer],
        handle: Callable[[Message], str],
        *,
        poll_timeout: float = 0.5,
        backoff: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        super().__init__(name, stop_timeout=30.0)
        self.name = name
        self._consumer_factory = consumer_factory
        self._handle = handle
        self.poll_timeout = poll_timeout
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.outcomes: Counter[str] = Counter()  # what ``handle`` returned, counted
        self.errors = 0
        self.consumer: Consumer | None = None

    def assignment(self) -> set[tuple[str, int]]:
        consumer = self.consumer
        return set() if consumer is None else consumer.assignment()

    def run(self) -> None:
        """Consume until ``stop_event`` is set (in the calling thread)."""
        consumer = self._consumer_factory()
        self.consumer = consumer
        # A batch with a failed message is polled again after a back-off.
        retrying = backoff(
            self.stop_event, self.backoff, self.backoff_max, retry=retry_if_result(lambda ok: not ok)
        )
        try:
            while not self.stopping:
                retrying(self._poll_batch, consumer)
        except Stopping:
            pass
        finally:
            self.consumer = None
            consumer.close()

    def _poll_batch(self, consumer: Consumer) -> bool:
        return self._run_batch(consumer, consumer.poll(self.poll_timeout))

    def _run_batch(self, consumer: Consumer, batch: list[Message]) -> bool:
        """Handle a polled batch; False when a message failed and was rewound."""
        blocked: set[tuple[str, int]] = set()
        for message in batch:
            partition = (message.topic, message.partition)
            if partition in blocked:
                continue
            if self.stopping:
                return True  # uncommitted: delivered again to whoever reads the partition next
            try:
                outcome = self._handle(message)
            except Stopping:
                return True
            except Exception:
                self.errors += 1
                log.exception(
                    "%s: %s:%s@%s failed; will retry",
                    self.name,
                    message.topic,
                    message.partition,
                    message.offset,
                )
                consumer.rewind(message)
                blocked.add(partition)
                continue
            consumer.commit(message)
            self.outcomes[outcome] += 1
        return not blocked


def send_to_dead_letter(
    publisher: Publisher, topic: str, message: Message, error: BaseException, consumer: str
) -> str:
    """Publish an undecodable message to the dead-letter topic (flushed), log it."""
    log.error(
        "%s: %s:%s@%s is not a valid message (%s); sent to %s",
        consumer,
        message.topic,
        message.partition,
        message.offset,
        error,
        topic,
    )
    publisher.publish(topic, message.key, DeadLetter.of(message, error, consumer).to_dict())
    publisher.flush(30)
    return "dead_letter"


class TopicConsumer:
    """A member of a consumer group that handles one topic in a ``ConsumerLoop`` thread and
    has a publisher of its own (the worker, the ingestor, the progress recorder). Subclasses
    define ``handle``; ``start()`` runs the loop in a thread, ``run()`` in the caller's."""

    def __init__(
        self, queue: MessageQueue, topic: str, group: str, options: PipelineOptions, name: str
    ) -> None:
        self.options = options
        self.topics = options.topics
        self.name = name
        self.publisher = queue.publisher()
        self.loop = ConsumerLoop(
            name, lambda: queue.consumer([topic], group), self.handle, poll_timeout=options.poll_timeout_s
        )

    def handle(self, message: Message) -> str:
        raise NotImplementedError

    def start(self) -> Self:
        self.loop.start()
        return self

    def stop(self) -> None:
        self.loop.stop()
        self.publisher.close()

    def run(self) -> None:
        self.loop.run()
