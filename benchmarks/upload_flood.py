"""Many large uploads at once against a real ``vto serve`` (issue 21, attack 3): one small PNG
(about 164 KB) that decodes to 8192 x 4882 RGBA pixels, uploaded N times at once to
``POST /assets`` by one account, then by N accounts, while another account asks
``GET /users/me`` every 100 ms.

Reports, for the server's Python process: RSS before and after, and its peak (VmHWM, reset
before each round through /proc/<pid>/clear_refs); each upload's status and time; the
``GET /users/me`` answers (statuses, p50 and max latency).

    uv run --frozen python -m benchmarks.upload_flood [--uploads 16] [--source DIR]

``--source DIR`` serves another checkout of the project (e.g. ``git archive`` of an older
commit) with this environment's packages, for a before-and-after comparison. Linux only."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import ExifTags, Image, ImageCms, ImageDraw

from infra.kafka.local import free_port

PASSWORD = "correct horse battery"
SIZE = (8192, 4882)


def attack_png() -> bytes:
    """The costliest image of its size to check: RGBA (4 bytes a pixel), turned a quarter by
    its EXIF orientation and with an ICC profile (each a copy of the pixels): about 164 KB."""
    image = Image.new("RGBA", SIZE, (255, 255, 255, 255))
    draw = ImageDraw.Draw(image)
    for x in range(0, SIZE[0], 512):
        draw.rectangle((x, 0, x + 200, SIZE[1]), fill=(x % 255, 40, 90, 200))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=9, exif=exif, icc_profile=icc)
    return out.getvalue()


def status_mb(pid: int, field_name: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} for {pid}")


@dataclass
class Round:
    name: str
    rss_before_mb: float
    rss_after_mb: float = 0.0
    peak_mb: float = 0.0
    uploads: list[tuple[int, float]] = field(default_factory=list)
    me: list[tuple[int, float]] = field(default_factory=list)

    def lines(self) -> list[str]:
        codes: dict[int, int] = {}
        for code, _ in self.uploads:
            codes[code] = codes.get(code, 0) + 1
        accepted = sorted(seconds for code, seconds in self.uploads if code == 201)
        me_ms = sorted(seconds * 1000 for _, seconds in self.me)
        me_codes = sorted({code for code, _ in self.me})
        return [
            f"## {self.name}",
            f"server RSS before {self.rss_before_mb:.0f} MB, peak {self.peak_mb:.0f} MB "
            f"(+{self.peak_mb - self.rss_before_mb:.0f} MB), after {self.rss_after_mb:.0f} MB",
            f"uploads: {dict(sorted(codes.items()))}; accepted ones took "
            + (f"{accepted[0]:.2f}..{accepted[-1]:.2f} s" if accepted else "-")
            + f"; all answered within {max(s for _, s in self.uploads):.2f} s",
            f"GET /users/me meanwhile: {len(self.me)} requests, statuses {me_codes}, "
            f"p50 {statistics.median(me_ms):.0f} ms, max {me_ms[-1]:.0f} ms",
        ]


class Server:
    def __init__(self, source: Path | None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vto-upload-flood-"))
        self.root.chmod(0o755)  # as root, pgserver runs PostgreSQL as its own user
        self.port = free_port()
        env = {**os.environ, "VTO_DATA_DIR": str(self.root / "data")}
        cwd = None
        if source is not None:
            env["PYTHONPATH"] = str(source)
            cwd = source
        self.log = (self.root / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from infra.cli import main; main()", "serve", "--port", str(self.port)],
            env=env,
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"vto serve exited; see {self.root / 'serve.log'}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("vto serve did not answer /healthz in 180 s")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


async def sign_in(client: httpx.AsyncClient) -> dict[str, str]:
    email = f"flood-{uuid.uuid4().hex[:10]}@example.com"
    registered = await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


async def flood(server: Server, data: bytes, uploaders: list[dict[str, str]], name: str) -> Round:
    pid = server.process.pid
    async with httpx.AsyncClient(base_url=server.base, timeout=300) as client:
        bystander = await sign_in(client)
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak starts again from here
        result = Round(name, status_mb(pid, "VmRSS"))
        done = asyncio.Event()

        async def upload(headers: dict[str, str]) -> None:
            start = time.perf_counter()
            response = await client.post(
                "/api/v1/assets",
                data={"type": "model"},
                files={"file": ("big.png", data, "image/png")},
                headers=headers,
            )
            result.uploads.append((response.status_code, time.perf_counter() - start))

        async def watch() -> None:
            while not done.is_set():
                start = time.perf_counter()
                response = await client.get("/api/v1/users/me", headers=bystander)
                result.me.append((response.status_code, time.perf_counter() - start))
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(upload(headers) for headers in uploaders))
        done.set()
        await watcher
        result.peak_mb = status_mb(pid, "VmHWM")
        result.rss_after_mb = status_mb(pid, "VmRSS")
    return result


async def main_async(uploads: int, source: Path | None) -> None:
    data = attack_png()
    print(f"# {uploads} concurrent uploads of one {len(data) / 1024:.0f} KB PNG of {SIZE[0]}x{SIZE[1]} px")
    print(f"served from {source or 'this checkout'}; {os.cpu_count()} CPUs\n")
    server = Server(source)
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
            one = await sign_in(client)
            many = [await sign_in(client) for _ in range(uploads)]
        rounds: list[Any] = [
            await flood(server, data, [one] * uploads, f"{uploads} uploads by one account"),
            await flood(server, data, many, f"{uploads} uploads by {uploads} accounts"),
        ]
    finally:
        server.stop()
    for item in rounds:
        print("\n".join(item.lines()) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uploads", type=int, default=16)
    parser.add_argument("--source", type=Path, default=None, help="serve this checkout instead")
    args = parser.parse_args()
    asyncio.run(main_async(args.uploads, args.source))


if __name__ == "__main__":
    main()
