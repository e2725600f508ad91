"""The consume loop shared by the worker, the ingestor and the progress recorder: poll, handle
each message, commit its offset only after ``handle`` returned (its effect is durable),
at-least-once.

Faults, and what the loop does:
- ``handle`` raises (database or broker unavailable...): the message is rewound, the rest of
  its partition's batch is left for later (so no later offset is committed past it), and the
  loop backs off before polling again. Handlers turn what is the message's own fault into an
  outcome (the dead-letter topic, a failed job), so what raises here is worth retrying.
- the commit fails (``CommitFailed``: a rebalance, the coordinator gone): logged, counted in
  ``commit_failures``; the message will be delivered again and its consumer deduplicates.
- the consumer cannot be created (no broker reachable: at start, during a broker restart) or
  its poll raises: logged, counted in ``consumer_failures``; the consumer is closed and a new
  one is created after a back-off (tenacity, doubling up to ``backoff_max``), until it works
  or the loop stops. The thread never dies of it."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import Self

from tenacity import RetryCallState, retry_if_exception, retry_if_result

from infra.queue.base import (
    CommitFailed,
    Consumer,
    ConsumerConfig,
    Message,
    MessageQueue,
    PipelineOptions,
    Publisher,
)
from infra.threads import BackgroundLoop, Stopping, backoff
from infra.tracing import TraceContext, describe
from pipeline.messages import DeadLetter

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
        max_records: int = 100,
        backoff: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        super().__init__(name, stop_timeout=30.0)
        self.name = name
        self._consumer_factory = consumer_factory
        self._handle = handle
        self.poll_timeout = poll_timeout
        self.max_records = max_records
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.outcomes: Counter[str] = Counter()  # what ``handle`` returned, counted
        self.errors = 0  # messages whose handling raised (rewound, handled again)
        self.commit_failures = 0  # offsets the broker did not take (delivered again)
        self.consumer_failures = 0  # consumers that could not start or whose poll raised
        self.consumers_started = 0
        self.consumer: Consumer | None = None

    def assignment(self) -> set[tuple[str, int]]:
        consumer = self.consumer
        return set() if consumer is None else consumer.assignment()

    def run(self) -> None:
        """Consume until ``stop_event`` is set (in the calling thread), with a new consumer
        after a back-off whenever one fails."""
        retrying = backoff(
            self.stop_event,
            self.backoff,
            self.backoff_max,
            retry=retry_if_exception(
                lambda error: isinstance(error, Exception) and not isinstance(error, Stopping)
            ),
            before_sleep=self._log_consumer_failure,
        )
        with contextlib.suppress(Stopping):
            retrying(self._consume)

    def _consume(self) -> None:
        """One consumer's life: create it, poll until stopping, close it. Raises what its
        creation or its poll raised (``run`` counts, logs, and starts another)."""
        try:
            consumer = self._consumer_factory()
        except Exception:
            self.consumer_failures += 1
            raise
        self.consumer = consumer
        self.consumers_started += 1
        # A batch with a failed message is polled again after a back-off.
        batches = backoff(
            self.stop_event, self.backoff, self.backoff_max, retry=retry_if_result(lambda ok: not ok)
        )
        try:
            while not self.stopping:
                batches(self._poll_batch, consumer)
        except Stopping:
            pass
        except Exception:
            self.consumer_failures += 1
            raise
        finally:
            self.consumer = None
            try:
                consumer.close()
            except Exception:  # a broken consumer may fail to close: it is replaced anyway
                log.warning("%s: closing the consumer failed", self.name, exc_info=True)

    def _log_consumer_failure(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "%s: consumer failed (%s: %s); a new one in %.1f s (failure %d)",
            self.name,
            type(error).__name__,
            error,
            wait,
            state.attempt_number,
            exc_info=error if state.attempt_number == 1 else None,
        )

    def _poll_batch(self, consumer: Consumer) -> bool:
        return self._run_batch(consumer, consumer.poll(self.poll_timeout, self.max_records))

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
                    "%s: %s:%s@%s (key %s; %s) failed; will retry",
                    self.name,
                    message.topic,
                    message.partition,
                    message.offset,
                    message.key,
                    describe(TraceContext.from_message(message)),
                )
                consumer.rewind(message)
                blocked.add(partition)
                continue
            try:
                consumer.commit(message)
            except CommitFailed as exc:
                self.commit_failures += 1
                log.error(
                    "%s: %s:%s@%s was handled (%s) but its offset was not committed (%s); "
                    "it will be delivered again (failed commits: %d)",
                    self.name,
                    message.topic,
                    message.partition,
                    message.offset,
                    outcome,
                    exc,
                    self.commit_failures,
                )
            self.outcomes[outcome] += 1
        return not blocked


def send_to_dead_letter(
    publisher: Publisher, topic: str, message: Message, error: BaseException, consumer: str
) -> str:
    """Publish a message that is not valid to the dead-letter topic (flushed, with the trace
    context its headers carried), log it."""
    trace = TraceContext.from_message(message)
    log.error(
        "%s: %s:%s@%s is not a valid message (%s); sent to %s (%s)",
        consumer,
        message.topic,
        message.partition,
        message.offset,
        error,
        topic,
        describe(trace),
    )
    headers = None if trace is None else trace.child().headers()
    publisher.publish(topic, message.key, DeadLetter.of(message, error, consumer).to_dict(), headers)
    publisher.flush(30)
    return "dead_letter"


class TopicConsumer:
    """A member of a consumer group that handles one topic in a ``ConsumerLoop`` thread and
    has a publisher of its own (the worker, the ingestor, the progress recorder). Subclasses
    define ``handle``; ``start()`` runs the loop in a thread, ``run()`` in the caller's."""

    def __init__(
        self,
        queue: MessageQueue,
        topic: str,
        group: str,
        options: PipelineOptions,
        name: str,
        config: ConsumerConfig | None = None,
    ) -> None:
        self.options = options
        self.topics = options.topics
        self.name = name
        self.publisher = queue.publisher()
        config = config or options.consumer
        self.loop = ConsumerLoop(
            name,
            lambda: queue.consumer([topic], group, config),
            self.handle,
            poll_timeout=options.poll_timeout_s,
            max_records=config.max_poll_records,
        )

    def handle(self, message: Message) -> str:
        raise NotImplementedError

    def start(self) -> Self:
        self.loop.start()
        return self

    def stop(self) -> None:
        self.loop.stop()
        self.publisher.close()
        loop = self.loop
        log.info(
            "%s: stopped; outcomes %s, handling errors %d, failed commits %d, consumer failures %d",
            self.name,
            dict(loop.outcomes),
            loop.errors,
            loop.commit_failures,
            loop.consumer_failures,
        )

    def run(self) -> None:
        self.loop.run()
