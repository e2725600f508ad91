"""`vto serve` as a real process, for the tests that run it end to end: on a fresh data dir
and a free port, its output kept in a log file beside the data dir."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from infra.database import embedded_postgres_pid
from infra.kafka.local import free_port

VTO = [sys.executable, "-c", "from infra.cli import main; main()"]


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)  # polling a condition with a deadline
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Caller:
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Serve:
    """`vto serve` on a data dir and a free port, as its own process."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    starts: int = 0

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VTO_")}
        return {**env, "VTO_DATA_DIR": str(self.data_dir)}

    def start(self, *args: str) -> Serve:
        """Start it (``args`` go to ``vto serve``) and wait until it answers ``/healthz``."""
        self.starts += 1
        self.log = self.data_dir.parent / f"serve-{self.starts}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [*VTO, "serve", "--port", str(self.port), *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self.healthy, 180, f"vto serve to answer /healthz (log {self.log})")
        return self

    def healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"vto serve exited with {self.process.returncode}: {self.output()}")
        try:
            return httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log else ""

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=60)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*VTO, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def postgres_pid(self) -> int | None:
        return embedded_postgres_pid(self.data_dir)


@contextlib.contextmanager
def serve_in_tmp() -> Iterator[Serve]:
    """A ``Serve`` on a fresh data dir (not started); killed, with its PostgreSQL, and removed
    at the end."""
    # Not pytest's tmp_path: its parent is private (0700) and another pytest run may prune it.
    root = Path(tempfile.mkdtemp(prefix="vto-test-serve-"))
    root.chmod(0o755)  # as root, pgserver runs PostgreSQL as its own user
    server = Serve(root / "data")
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        pid = server.postgres_pid()
        if pid is not None:  # a failed test: leave no server behind
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        shutil.rmtree(root, ignore_errors=True)
