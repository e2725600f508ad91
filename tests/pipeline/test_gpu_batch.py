"""GPU batching: compatible jobs share a model call, out-of-memory halves the batch down to
one request (then a retryable error), the metrics, and a worker taking several requests per
poll on the in-process queue."""

from __future__ import annotations

import dataclasses
import sys
import threading
import types
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from generator_worker import gpu_batch
from generator_worker.attempts import JobAttempts
from generator_worker.generation import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    ResourceError,
)
from generator_worker.gpu_batch import BatchingGenerator, ConcurrentConsumerLoop, batches
from generator_worker.worker import Worker
from infra.queue.base import Message, PipelineOptions
from infra.queue.memory import InProcessQueue
from infra.settings import Settings
from infra.storage import LocalStorage
from pipeline.messages import JobRequest, JobResult
from tests.factories import new_user
from tests.pipeline.conftest import TinyGenerator, job_request, wait_until


class OutOfMemoryError(RuntimeError):
    """Named as ``torch.cuda.OutOfMemoryError`` is (torch is not needed to test this)."""


class FakeBatchGenerator(TinyGenerator):
    """Runs a batch in one call; more than ``fits`` requests at once run out of memory."""

    def __init__(self, fits: int = 64, name: str = "fake-gpu") -> None:
        super().__init__()
        self.fits = fits
        self.batches: list[list[GenerationRequest]] = []
        self.info = dataclasses.replace(TinyGenerator.info, name=name)
        self._lock = threading.Lock()

    def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult | GenerationError]:
        with self._lock:
            self.batches.append(list(requests))
        if len(requests) > self.fits:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [self.generate(request) for request in requests]


def request(width: int = 128, height: int = 128, seed: int = 0) -> GenerationRequest:
    from generator_worker.generation import GarmentCategory, GarmentImage, GenerationOptions, JobKind

    return GenerationRequest(
        kind=JobKind.IMAGE,
        garments=(GarmentImage(b"garment", GarmentCategory.TOP),),
        model_photo=b"photo",
        options=GenerationOptions(width=width, height=height, seed=seed),
    )


def sample(name: str, backend: str) -> float:
    return gpu_batch.REGISTRY.get_sample_value(name, {"backend": backend}) or 0.0


def test_only_backends_that_batch_are_batched() -> None:
    assert batches(FakeBatchGenerator())
    assert not batches(TinyGenerator())  # the offline kind: one request at a time


def frozen() -> float:
    """A batcher's clock that never moves: a batch waits until it is full or the batcher
    closes (which runs what is waiting), however slowly the requests arrive."""
    return 0.0


def submitted(batcher: BatchingGenerator, requests: list[GenerationRequest], pool: ThreadPoolExecutor) -> Any:
    """Submit every request, wait until each is waiting in the batcher or already run, then
    close it (the batches left run): the futures of the results, in order."""
    futures = [pool.submit(batcher.generate, r) for r in requests]
    wait_until(lambda: len(batcher._pending) + sum(batcher.sizes) == len(requests), 30, "requests queued")
    batcher.close()
    return futures


def test_compatible_requests_share_a_model_call_and_incompatible_ones_do_not() -> None:
    inner = FakeBatchGenerator(name="fake-compatible")
    batcher = BatchingGenerator(inner, max_batch=4, clock=frozen)
    requests = [request(128, 128, seed=i) for i in range(4)] + [request(192, 128, seed=9)] * 2
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = [f.result() for f in submitted(batcher, requests, pool)]
    # every caller gets the result of its own request
    assert [r.outputs[0].width for r in results] == [128] * 4 + [192] * 2
    assert sorted(len(b) for b in inner.batches) == [2, 4]
    for batch in inner.batches:
        assert len({(r.options.width, r.options.height) for r in batch}) == 1
    assert sample("vto_gpu_images_total", "fake-compatible") == 6
    assert sample("vto_gpu_batch_size_count", "fake-compatible") == 2
    assert sample("vto_gpu_images_per_second", "fake-compatible") > 0


def test_a_batch_fills_up_to_the_limit_and_not_beyond() -> None:
    inner = FakeBatchGenerator(name="fake-limit")
    batcher = BatchingGenerator(inner, max_batch=2, clock=frozen)
    with ThreadPoolExecutor(max_workers=5) as pool:
        results = [f.result() for f in submitted(batcher, [request(seed=i) for i in range(5)], pool)]
    assert [r.outputs[0].width for r in results] == [128] * 5
    assert [len(b) for b in inner.batches] == [2, 2, 1]  # full batches, then the one left at close


def test_out_of_memory_halves_the_batch_and_caps_later_ones() -> None:
    inner = FakeBatchGenerator(fits=2, name="fake-oom")
    batcher = BatchingGenerator(inner, max_batch=8)
    outcomes = batcher.run([request(seed=i) for i in range(4)])
    assert all(isinstance(o, GenerationResult) for o in outcomes)
    assert [len(b) for b in inner.batches] == [4, 2, 2]
    assert sample("vto_gpu_oom_total", "fake-oom") == 1
    assert batcher.caps == {gpu_batch.batch_key(request()): 2}


def test_out_of_memory_at_one_request_is_a_retryable_error_not_a_loop() -> None:
    inner = FakeBatchGenerator(fits=0, name="fake-oom-always")
    batcher = BatchingGenerator(inner, max_batch=4)
    outcomes = batcher.run([request(seed=i) for i in range(4)])
    assert [len(b) for b in inner.batches] == [4, 2, 1, 1, 2, 1, 1]
    for outcome in outcomes:
        assert isinstance(outcome, ResourceError) and outcome.retryable
        assert isinstance(outcome.__cause__, OutOfMemoryError)
    assert sample("vto_gpu_oom_total", "fake-oom-always") == 7
    # through generate: the caller gets the declared error
    with pytest.raises(ResourceError, match="out of GPU memory"):
        batcher.generate(request())
    batcher.close()


def test_a_bug_in_one_request_of_a_batch_fails_that_request_only() -> None:
    class Picky(FakeBatchGenerator):
        def generate(self, request: GenerationRequest) -> GenerationResult:
            if request.options.seed == 13:
                raise IndexError("a bug")
            return super().generate(request)

    batcher = BatchingGenerator(Picky(name="fake-picky"), max_batch=4)
    outcomes = batcher.run([request(seed=s) for s in (1, 13, 2)])
    assert isinstance(outcomes[0], GenerationResult) and isinstance(outcomes[2], GenerationResult)
    assert isinstance(outcomes[1], IndexError)


def test_gpu_memory_is_exported_when_torch_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = types.SimpleNamespace(
        is_available=lambda: True,
        is_initialized=lambda: True,
        memory_allocated=lambda: 3 * 2**30,
        max_memory_allocated=lambda: 5 * 2**30,
        empty_cache=lambda: None,
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    batcher = BatchingGenerator(FakeBatchGenerator(name="fake-memory"), max_batch=2)
    batcher.run([request()])
    assert sample("vto_gpu_memory_allocated_bytes", "fake-memory") == 3 * 2**30
    assert sample("vto_gpu_memory_peak_bytes", "fake-memory") == 5 * 2**30


def test_the_concurrent_loop_handles_a_poll_at_once_and_commits_in_order() -> None:
    queue = InProcessQueue(partitions=1)
    publisher = queue.publisher()
    for i in range(4):
        publisher.publish("t", "same-key", {"i": i})
    inside = threading.Barrier(4, timeout=10)  # all four handled at the same time, or it breaks
    failures = iter([True])
    seen: set[int] = set()

    def handle(message: Message) -> str:
        i = message.json_value()["i"]
        if i not in seen:  # the first delivery of each
            seen.add(i)
            inside.wait()
        if i == 2 and next(failures, False):
            raise RuntimeError("database down")
        return "ok"

    loop = ConcurrentConsumerLoop(
        "test",
        lambda: queue.consumer(["t"], "g"),
        handle,
        poll_timeout=0.05,
        backoff=0.01,
        max_records=4,
        workers=4,
    )
    loop.start()
    try:
        wait_until(lambda: queue._committed.get(("g", "t", 0)) == 4, 10, "all four committed")
    finally:
        loop.stop()
    assert not inside.broken
    assert loop.errors == 1
    # 0 and 1 were committed; 2 failed, so 2 and 3 were delivered again and committed then
    assert loop.outcomes["ok"] == 4


@pytest.fixture
def options() -> PipelineOptions:
    return PipelineOptions.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]


def test_a_batching_worker_generates_compatible_jobs_in_one_call(
    pg_url: str, pg_ledger: Any, storage: LocalStorage, inputs: Any, options: PipelineOptions
) -> None:
    queue = InProcessQueue()
    user = new_user(pg_ledger, credits=10)
    inner = FakeBatchGenerator(name="fake-worker")
    batcher = BatchingGenerator(inner, max_batch=4, clock=frozen)  # one batch: when all 4 are in
    worker = Worker(
        queue, batcher, storage, pg_ledger.reservation_status, JobAttempts(pg_url), options, batch=4
    )
    publisher = queue.publisher()
    jobs = [uuid.uuid4() for _ in range(4)]
    for job_id in jobs:
        pg_ledger.request_job(user, job_id, "image", job_request(inputs))
        message = JobRequest.from_event(user, job_id, "image", job_request(inputs), pg_ledger.clock())
        publisher.publish(options.topics.requested, str(job_id), message.to_dict())
    worker.start()
    try:
        wait_until(lambda: worker.loop.outcomes["succeeded"] == 4, 30, "four jobs generated")
    finally:
        worker.stop()
        batcher.close()
    assert [len(b) for b in inner.batches] == [4]
    results = [JobResult.from_dict(m.json_value()) for m in queue.messages(options.topics.results)]
    assert sorted(r.job_id for r in results) == sorted(jobs)
    assert all(r.status.value == "succeeded" for r in results)
