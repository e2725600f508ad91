"""The background-loop lifecycle and the interruptible back-off (no services needed)."""

from __future__ import annotations

import threading

import pytest

from infra.threads import BackgroundLoop, Stopping, backoff


class _Ticker(BackgroundLoop):
    def __init__(self) -> None:
        super().__init__("ticker")
        self.ticks = 0
        self.ticked = threading.Event()

    def run(self) -> None:
        while not self.stopping:
            self.ticks += 1
            self.ticked.set()
            self.stop_event.wait(0.01)


def test_a_loop_starts_once_and_stops() -> None:
    loop = _Ticker().start()
    try:
        assert loop.ticked.wait(5)
        assert loop.running
        with pytest.raises(RuntimeError, match="already started"):
            loop.start()
    finally:
        loop.stop(5)
    assert not loop.running
    loop.start().stop(5)  # stopped, it may start again


class _Sleeper(BackgroundLoop):
    """Waits on something the stop event cannot end (as a LISTEN connection's wait), which
    ``wake_up`` ends."""

    def __init__(self) -> None:
        super().__init__("sleeper")
        self.outside = threading.Event()
        self.woken_with_stop_set: list[bool] = []

    def run(self) -> None:
        while not self.stopping:
            self.outside.wait(60)
            self.outside.clear()

    def wake_up(self) -> None:
        self.woken_with_stop_set.append(self.stopping)
        self.outside.set()


def test_stop_wakes_a_running_loop_once_after_setting_the_stop_event() -> None:
    loop = _Sleeper()
    loop.stop(5)  # not running: nothing to wake
    assert loop.woken_with_stop_set == []
    loop.start().stop(5)
    assert not loop.running  # ended by the wake-up, not the 60 s wait (joined within 5 s)
    assert loop.woken_with_stop_set == [True]


def test_backoff_retries_up_to_the_attempts_then_raises_the_last_error() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        raise ValueError(f"attempt {len(calls)}")

    with pytest.raises(ValueError, match="attempt 3"):
        backoff(threading.Event(), 0.001, 0.002, attempts=3)(flaky)
    assert len(calls) == 3


def test_a_stop_interrupts_the_backoff() -> None:
    stop = threading.Event()
    stop.set()
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise ValueError("down")

    with pytest.raises(Stopping):
        backoff(stop, 60.0, 60.0)(failing)
    assert calls == [1]
