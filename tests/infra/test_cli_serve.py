"""`vto serve` as a person meets it: quiet until it listens, then where it is and what to do
next; a busy port refused before the data directory is touched; Ctrl+C answered with one
line."""

from __future__ import annotations

import signal
import socket
import subprocess

import pytest

from infra.settings import Settings
from tests.serve_process import VTO, serve_in_tmp, wait_until

pytestmark = pytest.mark.slow

BANNER_END = "quickstart does it all."


def test_serve_is_quiet_until_it_listens_then_says_where_and_what_next_and_stops_in_one_line() -> None:
    with serve_in_tmp() as serve:
        serve.start()
        wait_until(lambda: BANNER_END in serve.output(), 30, "the banner")
        lines = serve.output().splitlines()
        assert len(lines) < 10, lines
        text = "\n".join(lines)
        base = f"http://127.0.0.1:{serve.port}"
        assert f"{base}/api/v1" in text
        assert f"{base}/docs" in text
        assert str(serve.data_dir.resolve()) in text
        assert "uv run vto admin add YOUR_EMAIL" in text
        assert "/api/v1/admin/grants" in text
        # what the model runtimes print goes to the data dir, not the terminal
        assert "TensorFlow" not in text and "W0000" not in text
        assert (serve.data_dir / "logs" / "native.log").exists()

        assert serve.process is not None
        serve.process.send_signal(signal.SIGINT)
        serve.process.send_signal(signal.SIGINT)  # a terminal's Ctrl+C may arrive twice
        assert serve.process.wait(timeout=60) == 0
        after = serve.output().splitlines()[len(lines) :]
        assert after == ["Ctrl+C: stopping (requests in progress finish first)"], "\n".join(after)


def test_a_busy_port_is_refused_before_the_data_dir_is_touched() -> None:
    with serve_in_tmp() as serve, socket.socket() as taken:
        taken.bind(("127.0.0.1", serve.port))
        taken.listen()
        result = subprocess.run(
            [*VTO, "serve", "--port", str(serve.port)],
            env=serve.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 1
        assert f"cannot listen on 127.0.0.1:{serve.port}: the port is in use" in result.stderr
        assert result.stdout == ""
        assert not serve.data_dir.exists()


def test_the_banner_shows_a_reachable_address_for_every_interface() -> None:
    from infra.cli import serve_banner

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert "http://127.0.0.1:8000/docs" in serve_banner(settings, "0.0.0.0", 8000)
    assert "http://[::1]:8000/docs" in serve_banner(settings, "::", 8000)
    assert "http://[fe80::1]:8000/docs" in serve_banner(settings, "fe80::1", 8000)
    lines = serve_banner(settings, "127.0.0.1", 65535).splitlines()
    assert all(len(line) <= 80 for line in lines if "data " not in line), lines
