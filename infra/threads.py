"""Background loops: the lifecycle every long-running thread of the processes shares (the
projection runners, the position watcher, the pipeline's consume loops and the sweeper), and
the exponential back-off they retry failures with (tenacity), interruptible by their stop.

A ``BackgroundLoop`` subclass writes ``run()`` (which returns once ``stopping`` is true);
``start()`` runs it in a daemon thread (once: a second start while it runs is refused),
``stop(timeout)`` sets the stop event and joins the thread. ``run()`` may also be called in
the caller's thread. ``backoff(loop.stop_event, ...)`` retries within the loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Self

from tenacity import (
    RetryCallState,
    Retrying,
    retry_base,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_exponential,
)


class Stopping(Exception):
    """Raised when the stop event interrupts a back-off: leave what was in hand undone."""


class BackgroundLoop:
    """Owns a daemon thread and its stop event; subclasses define ``run()``."""

    def __init__(self, thread_name: str, *, stop_timeout: float = 10.0) -> None:
        self.thread_name = thread_name
        self.stop_timeout = stop_timeout
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """The loop body: run until ``stopping`` (in the calling thread)."""
        raise NotImplementedError

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"{self.thread_name} already started")
        self.stop_event.clear()
        self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def wake_up(self) -> None:
        """Called by ``stop()`` while the thread runs, after the stop event is set: end a wait
        the event cannot end (a LISTEN connection's). Nothing here."""

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to stop (``wake_up``) and wait for its thread (at most ``timeout``
        seconds, by default ``stop_timeout``)."""
        running = self.running
        self.stop_event.set()
        if running:
            self.wake_up()
        if self._thread is not None:
            self._thread.join(self.stop_timeout if timeout is None else timeout)
            self._thread = None


def backoff(
    stop_event: threading.Event,
    first: float,
    maximum: float,
    *,
    retry: retry_base | None = None,
    attempts: int | None = None,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> Retrying:
    """Retry on ``retry`` (default: any ``Exception``) waiting ``first`` seconds, doubled after
    each attempt up to ``maximum``; at most ``attempts`` attempts in all (None: until it
    succeeds), then the last error is raised as it was. A back-off ends early with ``Stopping``
    when ``stop_event`` is set."""

    def sleep(seconds: float) -> None:
        if stop_event.wait(seconds):
            raise Stopping

    return Retrying(
        retry=retry or retry_if_exception_type(Exception),
        wait=wait_exponential(multiplier=first, max=maximum),
        stop=stop_never if attempts is None else stop_after_attempt(attempts),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
