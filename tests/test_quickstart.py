"""The README's quickstart runs as written: its shell block, against a real `vto serve`
(embedded defaults, a fresh data dir, a free port), registers, becomes an admin with
`uv run vto admin add`, grants points, uploads, orders a try-on and downloads the output."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from tests.serve_process import serve_in_tmp

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def quickstart_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the quickstart has one shell block"
    return str(blocks[0])


def test_the_quickstart_runs_as_written() -> None:
    assert shutil.which("uv") and shutil.which("jq") and shutil.which("curl"), (
        "the quickstart needs uv, jq, curl"
    )
    with serve_in_tmp() as serve, tempfile.TemporaryDirectory() as work:
        serve.start()
        (Path(work) / "docs").symlink_to(ROOT / "docs")  # the block's relative paths, outside the repo
        env = {
            **serve.env,
            "VTO_URL": f"http://127.0.0.1:{serve.port}",
            "UV_PROJECT": str(ROOT),  # `uv run` finds the project from the work dir
            "UV_FROZEN": "1",
        }
        result = subprocess.run(
            ["bash", "-c", quickstart_block()],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert re.search(r"job [0-9a-f-]{36}: succeeded", output), output
        assert "saved tryon.png" in output
        assert re.search(r'"credit": 9\b', output), output  # 10 granted, 1 paid for the image
        image = Image.open(io.BytesIO((Path(work) / "tryon.png").read_bytes()))
        assert image.format in {"PNG", "JPEG"} and min(image.size) >= 64
