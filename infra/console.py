"""What a process prints on its terminal: the log set-up, the native libraries' output kept
off the terminal, and the one line a stop signal prints.

``vto serve`` is meant to be read by a person: without ``--verbose`` it logs warnings and
errors only (and the links of the mail written to files in the embedded mode), and what
native code writes straight to the stderr file descriptor (TensorFlow Lite, absl, PostgreSQL's
tools) goes to a log file in the data directory. The production processes (``vto api``,
``vto worker``...) log at INFO, as ``--verbose`` does."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Loggers whose INFO lines a person running ``vto serve`` needs: the embedded mode's mail
# (the verification and password-reset links are only there).
ALWAYS_INFO = ("infra.mail",)

_stop_announced = False


def configure_logging(verbose: bool) -> None:
    """INFO for everything when ``verbose``; otherwise warnings and errors, and INFO from the
    loggers of ``ALWAYS_INFO``."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT, force=True)
    if not verbose:
        for name in ALWAYS_INFO:
            logging.getLogger(name).setLevel(logging.INFO)


def divert_native_stderr(path: Path) -> None:
    """Point file descriptor 2 (where native libraries and child processes write) at
    ``path`` (appended), and keep Python's ``sys.stderr`` (logging, tracebacks, messages)
    on the terminal it was on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    terminal = os.dup(2)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stderr = open(terminal, "w", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115


def announce_stop(signum: int) -> None:
    """Say once that the process is stopping, whatever number of signals arrives (a terminal's
    Ctrl+C may reach the process twice: from the terminal and from ``uv run``)."""
    global _stop_announced
    if _stop_announced:
        logging.getLogger("vto").debug("%s: already stopping", signal.Signals(signum).name)
        return
    _stop_announced = True
    what = "Ctrl+C" if signum == signal.SIGINT else signal.Signals(signum).name
    print(f"{what}: stopping (requests in progress finish first)", file=sys.stderr, flush=True)
