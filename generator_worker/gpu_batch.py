"""Batching for GPU backends: compatible jobs share one model call, out-of-memory halves it.

How a worker process uses it (``runtime.Pipeline.build``):

* one model load per process: the generator is built once and shared by the process's
  workers (as for every backend);
* when the backend batches (it overrides ``Generator.generate_batch``: the GPU backends do,
  the offline one does not) and ``VTO_GPU_BATCH`` > 1, the generator is wrapped in
  :class:`BatchingGenerator` and each worker takes up to ``VTO_GPU_BATCH`` requests per poll
  and handles them concurrently (:class:`ConcurrentConsumerLoop`); every job keeps its own
  attempts, deadline, retries and outcome (``Worker.handle`` is unchanged), only the model
  calls are shared. The offline backend keeps one request per poll, handled in turn;
* :class:`BatchingGenerator` gathers concurrent ``generate`` calls for a short window
  (``max_wait_s``) and runs the compatible ones (same job kind, size and steps:
  :func:`batch_key`) in one ``generate_batch`` call of at most ``max_batch`` requests;
* GPU out-of-memory (``torch.cuda.OutOfMemoryError``, recognised by its class name, or a
  retryable error whose cause it is) splits the batch in halves, each run again, down to
  single requests; a single request that runs out of memory fails with the retryable
  ``ResourceError`` (the worker retries it within the job's attempts, then fails it: never a
  loop). The size that last ran out of memory caps later batches of the same kind;
* metrics (Prometheus, :data:`REGISTRY`, served by ``vto worker`` on
  ``VTO_WORKER_METRICS_PORT``): ``vto_gpu_memory_allocated_bytes``,
  ``vto_gpu_memory_peak_bytes`` (torch's allocator, read only when torch is already loaded),
  ``vto_gpu_images_per_second`` (of the last batch), ``vto_gpu_images_total``,
  ``vto_gpu_batch_size`` (histogram of batch sizes run) and ``vto_gpu_oom_total`` (batches
  split or failed for memory), each labelled with the backend.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from generator_worker.generation.base import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    Generator,
    ResourceError,
)
from infra.queue.base import CommitFailed, Consumer, Message
from infra.threads import Stopping
from pipeline.consume import ConsumerLoop

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
GPU_MEMORY_ALLOCATED = Gauge(
    "vto_gpu_memory_allocated_bytes", "GPU memory held by tensors now", ["backend"], registry=REGISTRY
)
GPU_MEMORY_PEAK = Gauge(
    "vto_gpu_memory_peak_bytes", "Most GPU memory held by tensors since start", ["backend"], registry=REGISTRY
)
IMAGES_PER_SECOND = Gauge(
    "vto_gpu_images_per_second", "Requests per second of the last batch", ["backend"], registry=REGISTRY
)
IMAGES = Counter("vto_gpu_images", "Requests generated in batches", ["backend"], registry=REGISTRY)
BATCH_SIZE = Histogram(
    "vto_gpu_batch_size",
    "Requests per model call",
    ["backend"],
    registry=REGISTRY,
    buckets=(1, 2, 4, 8, 16, 32),
)
OOM = Counter("vto_gpu_oom", "Batches split or failed for lack of GPU memory", ["backend"], registry=REGISTRY)


def batches(generator: Generator) -> bool:
    """Whether ``generator`` runs several requests in one model call (it overrides
    ``generate_batch``)."""
    return type(generator).generate_batch is not Generator.generate_batch


def is_out_of_memory(error: BaseException | None) -> bool:
    """``torch.cuda.OutOfMemoryError`` (by class name: torch is not imported here), the
    allocator's "out of memory" ``RuntimeError``, or an error caused by either."""
    seen = 0
    while error is not None and seen < 8:
        if any(kind.__name__ == "OutOfMemoryError" for kind in type(error).__mro__):
            return True
        if isinstance(error, RuntimeError) and "out of memory" in str(error).lower():
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def batch_key(request: GenerationRequest) -> Hashable:
    """Requests with the same key may share a model call: same kind, size and steps."""
    options = request.options
    return (request.kind, options.width, options.height, getattr(options, "steps", None))


def gpu_memory() -> tuple[int, int] | None:
    """(allocated, peak) bytes of torch's CUDA allocator; None when torch is not loaded or
    has no CUDA."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return None
        return int(torch.cuda.memory_allocated()), int(torch.cuda.max_memory_allocated())
    except Exception:  # noqa: BLE001 - metrics never fail a job
        return None


def _release_cached_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.empty_cache()
        except Exception:
            log.debug("emptying the CUDA cache failed", exc_info=True)


Outcome = GenerationResult | BaseException


@dataclass
class _Pending:
    request: GenerationRequest
    key: Hashable
    future: Future[GenerationResult] = field(default_factory=Future)


class BatchingGenerator(Generator):
    """Wraps a batching backend: concurrent ``generate`` calls of compatible requests run
    together in ``inner.generate_batch`` (at most ``max_batch``), see the module docstring."""

    def __init__(
        self,
        inner: Generator,
        max_batch: int,
        *,
        max_wait_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.inner = inner
        self.info = inner.info
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.caps: dict[Hashable, int] = {}  # per batch key: the largest size not known to run out
        self.sizes: list[int] = []  # sizes of the model calls made (tests, logs)
        self._clock = clock
        self._pending: list[_Pending] = []
        self._ready = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._labels = {"backend": inner.info.name}

    # --- the interface ------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.validate(request)
        pending = _Pending(request, batch_key(request))
        with self._ready:
            if self._closed:
                raise ResourceError("the generator is closing")
            self._pending.append(pending)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="gpu-batcher", daemon=True)
                self._thread.start()
            self._ready.notify_all()
        return pending.future.result()

    def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult | GenerationError]:
        outcomes = self.run(requests)
        results: list[GenerationResult | GenerationError] = []
        for outcome in outcomes:
            if isinstance(outcome, GenerationResult | GenerationError):
                results.append(outcome)
            else:
                raise outcome
        return results

    def validate(self, request: GenerationRequest) -> None:
        self.inner.validate(request)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=60)
        self.inner.close()

    # --- batching -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            outcomes = self.run([p.request for p in group])
            for pending, outcome in zip(group, outcomes, strict=True):
                if isinstance(outcome, GenerationResult):
                    pending.future.set_result(outcome)
                else:
                    pending.future.set_exception(outcome)

    def _next_group(self) -> list[_Pending] | None:
        """The oldest request and up to ``max_batch - 1`` compatible ones, waiting up to
        ``max_wait_s`` after the oldest arrived for the batch to fill."""
        with self._ready:
            while not self._pending:
                if self._closed:
                    return None
                self._ready.wait()
            deadline = self._clock() + self.max_wait_s
            while True:
                key = self._pending[0].key
                limit = min(self.max_batch, self.caps.get(key, self.max_batch))
                compatible = [p for p in self._pending if p.key == key][:limit]
                left = deadline - self._clock()
                if len(compatible) >= limit or left <= 0 or self._closed:
                    break
                self._ready.wait(timeout=left)
            for pending in compatible:
                self._pending.remove(pending)
            return compatible

    def run(self, requests: list[GenerationRequest]) -> list[Outcome]:
        """Outcomes of ``requests`` (results, generation errors, or the exception a request
        raised), splitting the batch in halves on out-of-memory (see the module docstring)."""
        if not requests:
            return []
        start = time.perf_counter()
        try:
            outcomes: list[Outcome] = list(self.inner.generate_batch(list(requests)))
            if len(outcomes) != len(requests):
                raise RuntimeError(f"generate_batch returned {len(outcomes)} results for {len(requests)}")
        except Exception as raised:  # noqa: BLE001 - sorted out below, per request
            outcomes = [raised] * len(requests)
        self._observe(len(requests), outcomes, time.perf_counter() - start)
        if len(requests) == 1:
            (outcome,) = outcomes
            if not isinstance(outcome, GenerationResult) and is_out_of_memory(outcome):
                OOM.labels(**self._labels).inc()
                _release_cached_memory()
                if not isinstance(outcome, GenerationError) or not outcome.retryable:
                    declared = ResourceError("out of GPU memory, even for a single request")
                    declared.__cause__ = outcome
                    return [declared]
            return outcomes
        failed = [o for o in outcomes if not isinstance(o, GenerationResult | GenerationError)]
        if any(is_out_of_memory(o) for o in outcomes if not isinstance(o, GenerationResult)):
            OOM.labels(**self._labels).inc()
            _release_cached_memory()
            half = (len(requests) + 1) // 2
            key = batch_key(requests[0])
            self.caps[key] = min(self.caps.get(key, self.max_batch), half)
            log.warning(
                "%s: out of GPU memory at a batch of %d; trying %d at a time",
                self.info.name,
                len(requests),
                half,
            )
            return self.run(requests[:half]) + self.run(requests[half:])
        if failed:
            # an exception no backend declares, for the whole batch: find whose it is
            return [outcome for request in requests for outcome in self.run([request])]
        return outcomes

    def _observe(self, size: int, outcomes: list[Outcome], seconds: float) -> None:
        self.sizes.append(size)
        done = sum(isinstance(o, GenerationResult) for o in outcomes)
        BATCH_SIZE.labels(**self._labels).observe(size)
        if done:
            IMAGES.labels(**self._labels).inc(done)
            IMAGES_PER_SECOND.labels(**self._labels).set(done / max(seconds, 1e-9))
        memory = gpu_memory()
        if memory is not None:
            GPU_MEMORY_ALLOCATED.labels(**self._labels).set(memory[0])
            GPU_MEMORY_PEAK.labels(**self._labels).set(memory[1])


class ConcurrentConsumerLoop(ConsumerLoop):
    """A consume loop that handles the messages of a poll concurrently (``workers`` threads),
    then commits them in order: per partition up to the first that raised (rewound, with
    everything after it in its partition, for a later poll; a message handled meanwhile is
    delivered again and its handler deduplicates)."""

    def __init__(self, *args: Any, workers: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{self.name}-job")

    def stop(self, timeout: float | None = None) -> None:
        super().stop(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run_batch(self, consumer: Consumer, batch: list[Message]) -> bool:
        if len(batch) <= 1:
            return super()._run_batch(consumer, batch)
        if self.stopping:
            return True
        futures = [self._pool.submit(self._handle, message) for message in batch]
        outcomes: list[tuple[str | None, BaseException | None]] = []
        for future in futures:
            try:
                outcomes.append((future.result(), None))
            except BaseException as raised:  # noqa: BLE001 - sorted out below
                outcomes.append((None, raised))
        blocked: set[tuple[str, int]] = set()
        for message, (outcome, error) in zip(batch, outcomes, strict=True):
            partition = (message.topic, message.partition)
            if partition in blocked:
                continue
            if isinstance(error, Stopping) or (error is None and outcome is None):
                consumer.rewind(message)
                blocked.add(partition)
                continue
            if error is not None:
                self.errors += 1
                log.error(
                    "%s: %s:%s@%s failed; will retry",
                    self.name,
                    message.topic,
                    message.partition,
                    message.offset,
                    exc_info=error,
                )
                consumer.rewind(message)
                blocked.add(partition)
                continue
            try:
                consumer.commit(message)
            except CommitFailed as exc:
                self.commit_failures += 1
                log.error(
                    "%s: %s:%s@%s not committed (%s)",
                    self.name,
                    message.topic,
                    message.partition,
                    message.offset,
                    exc,
                )
            assert outcome is not None
            self.outcomes[outcome] += 1
        if any(isinstance(error, Stopping) for _, error in outcomes):
            return True
        return not blocked
