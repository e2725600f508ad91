"""A job's progress, queue position and ETA (``GET /vto/jobs/{id}``, the list), and its live
events (``GET /vto/jobs/{id}/events``) read by a real HTTP client from real uvicorn servers:
a whole life, resumed with ``Last-Event-ID``; a stream on a second replica seeing changes made
through the first; the per-account stream limit (docs/job-api.md).

Progress is written as the pipeline's progress recorder writes it (``pipeline.progress``) and
the job is finished through the ledger, as the ingestor does: each step happens when the test
says, so every event is known in advance."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy
import uvicorn

from command_api.serve import http_config
from infra.settings import Settings
from pipeline.progress import CLOSE_FINISHED, UPSERT
from tests.api_factories import Caller, make_user
from tests.mail_fixtures import free_port
from tests.test_vto import catalog, job_body, wait_until

API = "/api/v1"
OUTPUTS = [{"storage_key": "outputs/result.png", "media_type": "image/png", "width": 192, "height": 256}]
LIMIT = 2


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    """Short keep-alives and polls, and a stream limit of ``LIMIT`` per account."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path / "data",
        sse_keepalive_s=1.0,
        sse_poll_interval_s=0.5,
        sse_max_streams_per_account=LIMIT,
    )


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn (as ``vto api`` serves it) in a thread; its base URL."""
    port = free_port()
    server = uvicorn.Server(http_config(app, "127.0.0.1", port, quiet=True))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 20, "uvicorn to start")
        assert thread.is_alive(), "the server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


class Stream:
    """An open ``text/event-stream`` read in a thread: its events (and comments) in order."""

    def __init__(self, base: str, caller: Caller, job_id: str, last_event_id: str | None = None) -> None:
        headers = dict(caller.headers)
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.http = httpx.Client(base_url=base, timeout=httpx.Timeout(30.0))
        self.request = self.http.build_request("GET", f"{API}/vto/jobs/{job_id}/events", headers=headers)
        self.response = self.http.send(self.request, stream=True)
        self.items: queue.Queue[dict[str, Any] | str | None] = queue.Queue()
        if self.response.status_code == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        event: dict[str, Any] = {}
        try:
            for line in self.response.iter_lines():
                if line.startswith(":"):
                    self.items.put(line)
                elif line == "":
                    if event:
                        self.items.put(event)
                    event = {}
                else:
                    name, _, value = line.partition(": ")
                    event[name] = json.loads(value) if name == "data" else value
        except httpx.HTTPError:
            pass
        self.items.put(None)  # the end of the stream

    def next(self, timeout: float = 20.0, comments: bool = False) -> dict[str, Any] | str | None:
        """The next event (or the end: None), keep-alive comments skipped unless asked for."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.items.get(timeout=max(deadline - time.monotonic(), 0.01))
            if comments or not isinstance(item, str):
                return item

    def event(self) -> dict[str, Any]:
        item = self.next()
        assert isinstance(item, dict), f"expected an event, got {item!r}"
        return item

    def close(self) -> None:
        """Hang up: the socket shut down under the reading thread, as a client that goes away."""
        sock = self.response.extensions["network_stream"].get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        self.response.close()
        self.http.close()


class Streams:
    """Opens streams (call it like ``Stream``); as a context, hangs up on all of them at its
    end (before the server stops: uvicorn waits for open responses)."""

    def __init__(self) -> None:
        self.opened: list[Stream] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Stream:
        self.opened.append(Stream(*args, **kwargs))
        return self.opened[-1]

    def __enter__(self) -> Streams:
        return self

    def __exit__(self, *exc: object) -> None:
        for stream in self.opened:
            stream.close()


@pytest.fixture
def streams() -> Iterator[Streams]:
    with Streams() as opened:
        yield opened


def seller(services: Any) -> Caller:
    caller = make_user(services)
    services.ledger.grant(caller.id, "test", credits=20)
    return caller


def order(client: Any, caller: Caller, items: dict[str, str]) -> str:
    response = client.post(f"{API}/vto/jobs", json=job_body(items), headers=caller.headers)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def progress(url: str, job_id: str, fraction: float, started: datetime | None = None) -> None:
    """What the progress recorder writes for a worker's progress message."""
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(UPSERT, (job_id, started or now, fraction, now))


def test_a_stream_follows_a_job_to_the_end_and_resumes_without_repeating(
    client: Any, services: Any, pg_url: str, streams: Streams
) -> None:
    caller = seller(services)
    job_id = order(client, caller, catalog(client, caller))
    with serving(client.app) as base, streams:
        stream = streams(base, caller, job_id)
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        first = stream.event()
        assert (first["event"], first["id"], first["data"]["status"]) == ("status", "0", "queued")
        assert first["data"]["id"] == job_id and first["data"]["queue_position"] == 0
        assert stream.next(comments=True) == ": keep-alive"  # nothing happens for a second

        progress(pg_url, job_id, 0.0)
        running = stream.event()
        assert (running["event"], running["id"], running["data"]["status"]) == ("status", "10000", "running")
        assert running["data"]["queue_position"] is None
        progress(pg_url, job_id, 0.5)
        half = stream.event()
        assert (half["event"], half["id"], half["data"]["progress"]) == ("progress", "10500", 0.5)
        services.ledger.complete_job(caller.id, uuid.UUID(job_id), OUTPUTS)
        done = stream.event()
        assert (done["event"], done["id"], done["data"]["status"]) == ("status", "20500", "succeeded")
        assert done["data"]["outputs"][0]["url"].startswith("http")
        assert stream.next() is None  # closed after the terminal state

        # Resumed after the progress event: only what came after it; after the last: nothing.
        resumed = streams(base, caller, job_id, last_event_id="10500")
        assert [resumed.event()["id"], resumed.next()] == ["20500", None]
        seen_all = streams(base, caller, job_id, last_event_id="20500")
        assert seen_all.response.status_code == 200
        assert seen_all.next() is None


def test_a_stream_on_another_replica_sees_changes_made_through_the_first(
    client: Any, replica: Any, services: Any, pg_url: str, streams: Streams
) -> None:
    caller = seller(services)
    job_id = order(client, caller, catalog(client, caller))
    with serving(replica.app) as base, streams:
        stream = streams(base, caller, job_id)
        assert stream.event()["data"]["status"] == "queued"
        progress(pg_url, job_id, 0.25)
        assert stream.event()["data"]["progress"] == 0.25
        canceled = client.post(f"{API}/vto/jobs/{job_id}/cancel", headers=caller.headers)
        assert canceled.status_code == 200, canceled.text
        last = stream.event()
        assert (last["event"], last["data"]["status"]) == ("status", "canceled")
        assert last["data"]["refund"]["amount"] == 1
        assert stream.next() is None


def test_an_account_holds_at_most_its_limit_of_open_streams(
    client: Any, services: Any, streams: Streams
) -> None:
    caller, other = seller(services), seller(services)
    job_id = order(client, caller, catalog(client, caller))
    other_job = order(client, other, catalog(client, other))
    with serving(client.app) as base, streams:
        held = [streams(base, caller, job_id) for _ in range(LIMIT)]
        for stream in held:
            assert stream.event()["data"]["status"] == "queued"
        refused = streams(base, caller, job_id)
        assert refused.response.status_code == 429
        refused.response.read()
        problem = refused.response.json()
        assert problem["code"] == "too_many_streams"
        assert refused.response.headers["content-type"].startswith("application/problem+json")
        assert int(refused.response.headers["retry-after"]) >= 1
        # Another account is not counted with it; a job of another account is not found.
        assert streams(base, other, other_job).response.status_code == 200
        assert streams(base, caller, other_job).response.status_code == 404
        assert streams(base, caller, str(uuid.uuid4())).response.status_code == 404
        # A closed stream frees its slot (on the hub's next round).
        held[0].close()

        def reopened() -> Stream | None:
            stream = streams(base, caller, job_id)
            return stream if stream.response.status_code == 200 else None

        assert wait_until(reopened, 10, "a freed slot").event()["data"]["status"] == "queued"


def test_queue_position_and_eta_are_exact_for_a_known_queue(client: Any, services: Any, pg_url: str) -> None:
    """Four accepted jobs of two accounts: the first started 10 s ago (running, out of the
    queue), the others wait in acceptance order; one start in the 600 s window makes the rate
    1/600 per second, so the n-th in line (0-based) starts in (n + 1) * 600 s."""
    caller, other = seller(services), seller(services)
    items, other_items = catalog(client, caller), catalog(client, other)
    first = order(client, caller, items)
    second = order(client, other, other_items)
    third = order(client, caller, items)
    fourth = order(client, caller, items)
    progress(pg_url, first, 0.1, started=datetime.now(UTC) - timedelta(seconds=10))
    # A job started long ago, outside the window, does not count in the rate.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(UPSERT, (uuid.uuid4(), datetime.now(UTC) - timedelta(hours=2), 1.0, datetime.now(UTC)))

    def shown(who: Caller, job_id: str) -> dict[str, Any]:
        response = client.get(f"{API}/vto/jobs/{job_id}", headers=who.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    expected = {first: ("running", None, None), third: ("queued", 1, 1200.0), fourth: ("queued", 2, 1800.0)}
    for job_id, spot in expected.items():
        job = shown(caller, job_id)
        assert (job["status"], job["queue_position"], job["eta_s"]) == spot
    assert shown(caller, first)["progress"] == 0.1
    assert (shown(other, second)["queue_position"], shown(other, second)["eta_s"]) == (0, 600.0)
    listed = client.get(f"{API}/vto/jobs", headers=caller.headers)
    assert listed.status_code == 200
    assert {
        j["id"]: (j["status"], j["queue_position"], j["eta_s"]) for j in listed.json()["items"]
    } == expected
    # The second job starts and finishes: the jobs behind it move up; no start in the window:
    # no ETA. The sweeper's pass takes its progress row out of the open set, not the first's.
    progress(pg_url, second, 1.0)
    services.ledger.complete_job(other.id, uuid.UUID(second), OUTPUTS)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE job_progress SET started_at = started_at - interval '1 hour'")
    wait_until(lambda: shown(other, second)["status"] == "succeeded", 20, "the second job's success")
    assert (shown(caller, third)["queue_position"], shown(caller, third)["eta_s"]) == (0, None)
    assert shown(caller, fourth)["queue_position"] == 1
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(CLOSE_FINISHED)
        still_open = {str(row[0]) for row in conn.execute("SELECT job_id FROM job_progress WHERE open")}
    assert first in still_open and second not in still_open
    assert shown(caller, fourth)["queue_position"] == 1
    assert shown(caller, fourth)["queue_position_exact"] is True
    # Counted exactly up to VTO_QUEUE_POSITION_EXACT_MAX jobs ahead; past it, a lower bound.
    # Ahead of the fourth: the first (started) and the third.
    services.settings.queue_position_exact_max = 2
    capped = shown(caller, fourth)
    assert (capped["queue_position"], capped["queue_position_exact"]) == (1, False)
    assert (shown(caller, third)["queue_position"], shown(caller, third)["queue_position_exact"]) == (0, True)
    services.settings.queue_position_exact_max = 3
    exact = shown(caller, fourth)
    assert (exact["queue_position"], exact["queue_position_exact"]) == (1, True)
    assert shown(caller, first)["queue_position_exact"] is None  # running: not in the queue
    # A poll of a queued job is one statement: its place is read with the job and the token.
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sqlalchemy.event.listen(services.engine, "before_cursor_execute", seen)
    try:
        assert shown(caller, fourth)["queue_position"] == 1
    finally:
        sqlalchemy.event.remove(services.engine, "before_cursor_execute", seen)
    assert len(statements) == 1, statements
