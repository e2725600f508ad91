"""What the HTTP benchmarks share: seeding users on a migrated database, the deployment's
processes as subprocesses (``vto api``, ``vto projector``, ...), waiting for a URL, and the CPU
time of process trees (``benchmarks/api_bench.py``, ``benchmarks/jobs_vs_prd.py``)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from PIL import Image, ImageDraw

from command_api.auth import tokens
from command_api.catalog.models import Asset, Collection, Product, Project
from command_api.users.models import User
from infra.database import embedded_postgres_url, stop_embedded_postgres
from infra.ledger_store import postgres_ledger
from infra.orm import make_engine, make_sessionmaker
from infra.settings import Settings
from infra.storage import LocalStorage

SECRET = "bench-" + "s" * 40
LOGS = Path(tempfile.gettempdir()) / "vto-bench-logs"  # the processes' output, kept for reading


@contextlib.contextmanager
def benchmark_server(prefix: str = "vto-bench-pg-") -> Iterator[str]:
    """The PostgreSQL server a benchmark creates its scratch database on: ``VTO_DATABASE_URL``'s,
    or an embedded one in a temporary directory, stopped and removed at the end."""
    external = os.environ.get("VTO_DATABASE_URL")
    if external:
        yield external
        return
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    data_dir.chmod(0o755)  # as root pgserver runs PostgreSQL as its own system user
    try:
        yield embedded_postgres_url(data_dir)
    finally:
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class Seeded:
    token: str
    body: dict[str, Any]  # a POST /vto/jobs body for the user's project, product and photo
    user_id: uuid.UUID


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def seed(url: str, data_dir: Path, users: int, credits: int, prefix: str = "bench") -> list[Seeded]:
    """``users`` users, each with a collection, a project, a garment, a model photo and
    ``credits`` credits; their access tokens (signed with ``SECRET``) and job bodies."""
    from skimage import data

    storage = LocalStorage(data_dir / "files", SECRET.encode())
    model = png(Image.fromarray(np.asarray(data.astronaut())).resize((384, 384)))
    garment = Image.new("RGB", (256, 256), (245, 245, 245))
    ImageDraw.Draw(garment).rectangle((60, 40, 196, 230), fill=(200, 30, 40))
    garment_bytes = png(garment)
    engine = make_engine(url, 4)
    sessions = make_sessionmaker(engine)
    ledger = postgres_ledger(Settings(), url)
    seeded = []
    with sessions() as session:
        for i in range(users):
            user = User(email=f"{prefix}{i}@example.com", name="Bench", language="en", token_version=0)
            session.add(user)
            session.flush()
            collection = Collection(owner_id=user.id, name="bench")
            session.add(collection)
            session.flush()
            project = Project(collection_id=collection.id, owner_id=user.id, name="bench")
            session.add(project)
            session.flush()
            model_key, garment_key = f"{prefix}/{i}/model.png", f"{prefix}/{i}/garment.png"
            storage.put(model_key, model, "image/png")
            storage.put(garment_key, garment_bytes, "image/png")
            product = Product(
                project_id=project.id,
                category="top",
                side="front",
                storage_key=garment_key,
                media_type="image/png",
                width=256,
                height=256,
                size_bytes=1,
            )
            asset = Asset(
                owner_id=user.id,
                type="model",
                storage_key=model_key,
                media_type="image/png",
                width=384,
                height=384,
                size_bytes=1,
            )
            session.add_all([product, asset])
            session.flush()
            token, _ = tokens.issue(SECRET, user.id, 0, "access", tokens.REFRESH_TTL)
            body = {
                "project_id": str(project.id),
                "kind": "image",
                "product_ids": [str(product.id)],
                "model_asset_id": str(asset.id),
            }
            seeded.append(Seeded(token, body, user.id))
            ledger.grant(user.id, "bench", credits=credits)
        session.commit()
    ledger.close()
    engine.dispose()
    return seeded


class Processes:
    """Subprocesses started with one environment, their output in ``logs`` (``LOGS`` unless
    given); stopped together (SIGTERM, then SIGKILL after 20 s)."""

    def __init__(self, env: dict[str, str], logs: Path = LOGS) -> None:
        self.env = env
        self.logs = logs
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """``vto ARGS...`` (the console script's entry point, by this interpreter)."""
        command = [sys.executable, "-c", "from infra.cli import main; main()", *args]
        return self.start_command(args[0], command)

    def start_command(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        self.logs.mkdir(exist_ok=True)
        with (self.logs / f"{name}-{len(self.running)}.log").open("wb") as log:
            process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.running.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.running):
            process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.running.clear()


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def tree_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes ``pids`` and all their descendants, those
    that ended included (once their parent reaped them: the kernel adds them to the parent's
    children times). The difference of two readings is the CPU the trees used in between."""
    seen: set[int] = set()
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            members = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in members:
            if process.pid in seen:
                continue
            seen.add(process.pid)
            try:
                t = process.cpu_times()
            except psutil.NoSuchProcess:
                continue  # ended between the listing and the reading: its parent now counts it
            total += t.user + t.system + t.children_user + t.children_system
    return total
