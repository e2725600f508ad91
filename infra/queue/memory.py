"""An in-process queue with Kafka's semantics (``infra.queue.base``), for ``vto serve`` on
the embedded defaults: every process kind runs as a thread of one process and shares it.

Topics have a fixed number of partitions (key hash); consumer groups split them between
their members (reassigned whenever a member joins or leaves, like a Kafka rebalance); each
group's committed offsets survive its members, so a new member resumes where the last commit
left off. Nothing survives the process: after a restart the relay republishes what it had
not tracked, and what was in flight is recovered by the sweeper's timeout."""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from infra.queue.base import ConsumerConfig, Headers, Message, encode_value

Record = tuple[str | None, bytes, tuple[tuple[str, bytes], ...]]  # key, value, headers


def partition_for(key: str | None, partitions: int, counter: itertools.count[int]) -> int:
    if key is None:
        return next(counter) % partitions
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") % partitions


class InProcessQueue:
    def __init__(self, partitions: int = 4) -> None:
        self.partitions = partitions
        self._lock = threading.Condition()
        self._logs: dict[str, list[list[Record]]] = {}
        self._committed: dict[tuple[str, str, int], int] = {}  # (group, topic, partition) -> offset
        self._members: dict[str, list[InProcessConsumer]] = {}
        self._generation: dict[str, int] = {}
        self._round_robin = itertools.count()

    def _log(self, topic: str) -> list[list[Record]]:
        log = self._logs.get(topic)
        if log is None:
            log = self._logs[topic] = [[] for _ in range(self.partitions)]
        return log

    def append(self, topic: str, key: str | None, value: bytes, headers: Headers | None = None) -> None:
        record = (key, value, tuple((k, v.encode("utf-8")) for k, v in (headers or {}).items()))
        with self._lock:
            self._log(topic)[partition_for(key, self.partitions, self._round_robin)].append(record)
            self._lock.notify_all()

    def messages(self, topic: str) -> list[Message]:
        """Every message of a topic (tests, debugging)."""
        with self._lock:
            return [
                Message(topic, p, o, k, v, h)
                for p, part in enumerate(self._log(topic))
                for o, (k, v, h) in enumerate(part)
            ]

    # ------------------------------------------------------------------ MessageQueue
    def publisher(self) -> InProcessPublisher:
        return InProcessPublisher(self)

    def consumer(
        self, topics: Sequence[str], group_id: str, config: ConsumerConfig | None = None
    ) -> InProcessConsumer:
        """A member of ``group_id`` (``config`` is Kafka's; here only ``poll``'s
        ``max_records`` limits a batch)."""
        consumer = InProcessConsumer(self, tuple(topics), group_id)
        with self._lock:
            self._members.setdefault(group_id, []).append(consumer)
            self._generation[group_id] = self._generation.get(group_id, 0) + 1
            self._lock.notify_all()
        return consumer

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ groups
    def _leave(self, consumer: InProcessConsumer) -> None:
        with self._lock:
            members = self._members.get(consumer.group_id, [])
            if consumer in members:
                members.remove(consumer)
                self._generation[consumer.group_id] += 1
                self._lock.notify_all()

    def _assign(self, consumer: InProcessConsumer) -> None:
        """Called with the lock held: recompute the consumer's partitions after a change of
        its group's membership (round robin over the sorted partitions)."""
        generation = self._generation[consumer.group_id]
        if consumer._generation == generation:
            return
        members = self._members[consumer.group_id]
        index = members.index(consumer)
        pairs = sorted({(t, p) for m in members for t in m.topics for p in range(self.partitions)})
        mine = {
            pair for i, pair in enumerate(pairs) if i % len(members) == index and pair[0] in consumer.topics
        }
        consumer._positions = {
            pair: self._committed.get((consumer.group_id, *pair), 0) for pair in sorted(mine)
        }
        consumer._generation = generation


class InProcessPublisher:
    def __init__(self, queue: InProcessQueue) -> None:
        self._queue = queue

    def publish(
        self, topic: str, key: str | None, value: Mapping[str, Any], headers: Headers | None = None
    ) -> None:
        self._queue.append(topic, key, encode_value(value), headers)

    def publish_raw(self, topic: str, key: str | None, value: bytes, headers: Headers | None = None) -> None:
        self._queue.append(topic, key, value, headers)

    def flush(self, timeout: float | None = None) -> None:
        pass  # appended synchronously

    def close(self) -> None:
        pass


class InProcessConsumer:
    def __init__(self, queue: InProcessQueue, topics: tuple[str, ...], group_id: str) -> None:
        self._queue = queue
        self.topics = topics
        self.group_id = group_id
        self._generation = -1
        self._positions: dict[tuple[str, int], int] = {}
        self._closed = False

    def poll(self, timeout: float, max_records: int = 100) -> list[Message]:
        deadline = time.monotonic() + timeout
        queue = self._queue
        with queue._lock:
            while not self._closed:
                queue._assign(self)
                batch: list[Message] = []
                for (topic, partition), offset in self._positions.items():
                    part = queue._log(topic)[partition]
                    end = min(len(part), offset + max_records - len(batch))
                    for o in range(offset, end):
                        key, value, headers = part[o]
                        batch.append(Message(topic, partition, o, key, value, headers))
                    self._positions[(topic, partition)] = max(offset, end)
                    if len(batch) >= max_records:
                        break
                if batch:
                    return batch
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                queue._lock.wait(remaining)
            return []

    def commit(self, message: Message) -> None:
        with self._queue._lock:
            key = (self.group_id, message.topic, message.partition)
            self._queue._committed[key] = max(self._queue._committed.get(key, 0), message.offset + 1)

    def rewind(self, message: Message) -> None:
        with self._queue._lock:
            pair = (message.topic, message.partition)
            if pair in self._positions:
                self._positions[pair] = min(self._positions[pair], message.offset)

    def assignment(self) -> set[tuple[str, int]]:
        with self._queue._lock:
            self._queue._assign(self)
            return set(self._positions)

    def close(self) -> None:
        self._closed = True
        self._queue._leave(self)
