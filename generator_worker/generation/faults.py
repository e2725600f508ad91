"""Fault injection (``VTO_GENERATOR_FAILURE_RATE``): a share of generations fail, retryably."""

from __future__ import annotations

import random
import threading

from generator_worker.generation.base import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    Generator,
    InjectedFailureError,
)


class FaultInjectingGenerator(Generator):
    """Wraps a backend; each call fails with ``InjectedFailureError`` with probability ``rate``.

    The draw happens before any work, so chaos runs stay cheap. ``rng_seed`` makes the
    sequence of failures reproducible (tests); by default it is random per process.
    """

    def __init__(self, inner: Generator, rate: float, rng_seed: int | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("failure rate must be within 0..1")
        self.inner = inner
        self.rate = rate
        self.info = inner.info
        self._random = random.Random(rng_seed)
        self._lock = threading.Lock()

    def _draw(self) -> bool:
        with self._lock:
            return self._random.random() < self.rate

    def generate(self, request: GenerationRequest) -> GenerationResult:
        if self.rate > 0 and self._draw():
            raise InjectedFailureError(f"injected failure (VTO_GENERATOR_FAILURE_RATE={self.rate:g})")
        return self.inner.generate(request)

    def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult | GenerationError]:
        failed = [self.rate > 0 and self._draw() for _ in requests]
        passed = self.inner.generate_batch([r for r, f in zip(requests, failed, strict=True) if not f])
        results: list[GenerationResult | GenerationError] = []
        for is_failed in failed:
            results.append(
                InjectedFailureError(f"injected failure (VTO_GENERATOR_FAILURE_RATE={self.rate:g})")
                if is_failed
                else passed.pop(0)
            )
        return results

    def validate(self, request: GenerationRequest) -> None:
        self.inner.validate(request)

    def close(self) -> None:
        self.inner.close()
