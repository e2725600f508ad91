"""The webhook dispatcher (``pipeline.webhooks``) on real PostgreSQL, delivering to a real HTTP
receiver whose requests are checked with the reference verifier (``standardwebhooks``). Jobs
are ordered and finished through the ledger itself (the API's part is in
tests/test_webhooks.py), their progress written as the progress recorder writes it."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from command_api.webhooks.service import job_renderer
from infra.settings import Settings
from pipeline.progress import UPSERT
from pipeline.webhooks.dispatcher import WebhookDispatcher
from pipeline.webhooks.events import events_filter
from pipeline.webhooks.sender import Render
from pipeline.webhooks.targets import AsyncResolve, resolve_async
from tests.api_factories import Caller, make_user
from tests.pipeline.conftest import wait_until
from tests.webhook_receiver import Received, Receiver, Reply, receiving

OUTPUTS = [{"storage_key": "outputs/result.png", "media_type": "image/png", "width": 192, "height": 256}]
SCHEDULE = [0.0, 0.3, 0.3, 0.3]  # the Standard Webhooks schedule, in tenths of seconds
TIMEOUT_S = 1.0


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    """The services' settings, with a retry schedule in fractions of a second, webhooks to the
    local receiver allowed, and a rotation window of 2 s."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        webhook_allow_private_networks=True,
        webhook_retry_schedule_s=SCHEDULE,
        webhook_retry_jitter=0.0,
        webhook_timeout_s=TIMEOUT_S,
        webhook_poll_interval_s=0.2,
        webhook_max_in_flight_per_account=2,
        webhook_secret_overlap_s=2,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


@pytest.fixture
def start_dispatcher(services: Any) -> Iterator[Callable[..., WebhookDispatcher]]:
    started: list[WebhookDispatcher] = []

    def start(
        settings: Settings | None = None, resolver: AsyncResolve = resolve_async, render: Render | None = None
    ) -> WebhookDispatcher:
        settings = settings or services.settings
        render = render or renderer(services)
        dispatcher = WebhookDispatcher.build(settings, services.url, render, resolver=resolver).start()
        started.append(dispatcher)
        return dispatcher

    yield start
    for dispatcher in started:
        dispatcher.stop()


def renderer(services: Any) -> Render:
    return job_renderer(services.engine, services.storage, 3600, "http://testserver")


def seller(services: Any) -> Caller:
    caller = make_user(services)
    services.ledger.grant(caller.id, "test", credits=100)
    return caller


def secret_of(client: Any, caller: Caller) -> str:
    response = client.get("/api/v1/webhooks/default/secret", headers=caller.headers)
    assert response.status_code == 200, response.text
    key: str = response.json()["key"]
    return key


def order(services: Any, caller: Caller, url: str, events: Sequence[str] | None = None) -> uuid.UUID:
    """A job whose request names ``url`` as its webhook, as the API records it."""
    job_id = uuid.uuid4()
    request = {
        "project_id": str(uuid.uuid4()),
        "inputs": {},
        "options": {},
        "webhook": url,
        "webhook_events_filter": events_filter(events),
    }
    services.ledger.request_job(caller.id, job_id, "image", request)
    return job_id


def progress(services: Any, job_id: uuid.UUID, fraction: float) -> None:
    """What the pipeline's progress recorder writes for a worker's progress message."""
    now = datetime.now(UTC)
    with psycopg.connect(services.url, autocommit=True) as conn:
        conn.execute(UPSERT, (job_id, now, fraction, now))


def deliveries(client: Any, caller: Caller, job_id: uuid.UUID) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/vto/jobs/{job_id}/webhook-deliveries", headers=caller.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def settled(
    client: Any, caller: Caller, job_id: uuid.UUID, count: int = 1, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The job's deliveries once ``count`` of them are no longer pending."""
    return wait_until(
        lambda: (
            (found := deliveries(client, caller, job_id))
            and sum(d["status"] != "pending" for d in found) >= count
            and found
        ),
        timeout,
        f"{count} deliveries of job {job_id} to settle",
    )


def of_job(requests: Sequence[Received], secret: str, job_id: uuid.UUID) -> list[dict[str, Any]]:
    payloads = [r.verified(secret) for r in requests]
    return [p for p in payloads if p["data"]["id"] == str(job_id)]


def test_a_finished_job_is_delivered_once_signed_as_the_reference_verifier_expects(
    client: Any, services: Any, receiver: Receiver, start_dispatcher: Any
) -> None:
    caller = seller(services)
    secret = secret_of(client, caller)
    job_id = order(services, caller, receiver.url())
    start_dispatcher()
    services.ledger.complete_job(caller.id, job_id, OUTPUTS)
    (request,) = receiver.wait_for(lambda got: len(got) >= 1, what="the webhook")
    payload = request.verified(secret)
    assert payload["type"] == "job.completed"
    assert request.headers["content-type"] == "application/json"
    assert request.webhook_id.startswith("msg_") and "." not in request.webhook_id
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert payload["timestamp"].endswith("Z")
    # data: the job as GET /vto/jobs/{id} shows it, its links absolute
    shown = client.get(f"/api/v1/vto/jobs/{job_id}", headers=caller.headers).json()
    data = payload["data"]
    assert data["status"] == "succeeded" and data["charge"] == {"source": "credit", "amount": 1}
    link = data["outputs"][0].pop("url")
    shown["outputs"][0].pop("url")
    assert data == shown
    assert link.startswith("http://testserver/api/v1/files/outputs/result.png?")
    # one delivery, one attempt, nothing more
    (delivery,) = settled(client, caller, job_id)
    assert delivery["status"] == "delivered" and delivery["webhook_id"] == request.webhook_id
    assert [a["status_code"] for a in delivery["attempts"]] == [200]
    assert delivery["attempts"][0]["response_body"] == "ok"
    assert len(receiver.requests) == 1


def test_start_and_progress_come_from_the_workers_progress_at_most_every_half_second(
    client: Any, services: Any, receiver: Receiver, start_dispatcher: Any
) -> None:
    caller = seller(services)
    secret = secret_of(client, caller)
    job_id = order(services, caller, receiver.url())
    start_dispatcher()
    progress(services, job_id, 0.0)
    receiver.wait_for(lambda got: len(got) >= 1, what="job.started")
    began = time.monotonic()
    step = 0.05
    while (fraction := round((time.monotonic() - began) / 1.5, 3)) < 1.0:  # 1.5 s of progress
        progress(services, job_id, fraction)
        time.sleep(step)  # the pace of a worker's progress (the test's subject)
    progress(services, job_id, 1.0)
    wait_until(lambda: of_job(receiver.requests, secret, job_id)[-1]["data"]["progress"] == 1.0, 10)
    services.ledger.complete_job(caller.id, job_id, OUTPUTS)
    receiver.wait_for(lambda got: any(r.verified(secret)["type"] == "job.completed" for r in got))
    payloads = of_job(receiver.requests, secret, job_id)
    types = [p["type"] for p in payloads]
    assert types[0] == "job.started" and types[-1] == "job.completed"
    assert payloads[0]["data"]["status"] == "running"
    steps = [r for r in receiver.requests if r.verified(secret)["type"] == "job.progress"]
    assert 2 <= len(steps) <= 5  # 1.5 s of progress at most one every 0.5 s (and the last)
    gaps = [b.at - a.at for a, b in itertools.pairwise(steps)]
    assert all(gap >= 0.45 for gap in gaps), gaps
    values = [r.verified(secret)["data"]["progress"] for r in steps]
    assert values == sorted(values) and values[-1] == 1.0
    assert len({r.webhook_id for r in receiver.requests}) == len(receiver.requests)  # one id per event


def test_the_events_filter_chooses_what_is_sent(
    client: Any, services: Any, receiver: Receiver, start_dispatcher: Any
) -> None:
    caller = seller(services)
    secret = secret_of(client, caller)
    only_completed = order(services, caller, receiver.url("/completed"), ["completed"])
    only_start = order(services, caller, receiver.url("/start"), ["start"])
    start_dispatcher()
    for job_id in (only_completed, only_start):
        progress(services, job_id, 0.0)
        progress(services, job_id, 0.7)
    receiver.wait_for(lambda got: any(r.path == "/start" for r in got), what="job.started")
    for job_id in (only_completed, only_start):
        services.ledger.complete_job(caller.id, job_id, OUTPUTS)
    receiver.wait_for(lambda got: any(r.path == "/completed" for r in got), what="job.completed")
    settled(client, caller, only_start)
    assert [r.verified(secret)["type"] for r in receiver.at("/completed")] == ["job.completed"]
    assert [r.verified(secret)["type"] for r in receiver.at("/start")] == ["job.started"]


def test_failed_and_canceled_jobs_carry_their_refund(
    client: Any, services: Any, receiver: Receiver, start_dispatcher: Any
) -> None:
    caller = seller(services)
    secret = secret_of(client, caller)
    failed = order(services, caller, receiver.url())
    canceled = order(services, caller, receiver.url())
    start_dispatcher()
    services.ledger.fail_job(
        caller.id, failed, {"code": "generation_failed", "message": "x", "retryable": False}
    )
    services.ledger.cancel_job(caller.id, canceled, "changed my mind")
    receiver.wait_for(lambda got: len(got) >= 2)
    (fail,) = of_job(receiver.requests, secret, failed)
    (cancel,) = of_job(receiver.requests, secret, canceled)
    assert fail["type"] == cancel["type"] == "job.completed"
    assert fail["data"]["status"] == "failed" and fail["data"]["error"]["code"] == "generation_failed"
    assert fail["data"]["refund"] == {"source": "credit", "amount": 1, "cause": "failed"}
    assert cancel["data"]["status"] == "canceled"
    assert cancel["data"]["refund"] == {"source": "credit", "amount": 1, "cause": "canceled"}


def test_retries_after_500s_carry_the_same_webhook_id(
    client: Any, services: Any, receiver: Receiver, start_dispatcher: Any
) -> None:
    caller = seller(services)
    secret = secret_of(client, caller)
    answers = iter([Reply(500, body=b"boom"), Reply(500), Reply(200)])
    receiver.answer(lambda _: next(answers))
    job_id = order(services, caller, receiver.url())
    start_dispatcher()
    services.ledger.complete_job(caller.id, job_id, OUTPUTS)
    got = receiver.wait_for(lambda got: len(got) >= 3, what="three attempts")
    assert len({r.webhook_id for r in got}) == 1
    assert len({r.body for r in got}) == 1  # the same body on every attempt
    for request in got:
        request.verified(secret)
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert all(gap >= 0.25 for gap in gaps), gaps  # the schedule's 0.3 s
    (delivery,) = settled(client, caller, job_id)
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert delivery["attempts"][0]["error"] == "the endpoint answered 500"
    assert delivery["attempts"][0]["response_body"] == "boom"


def test_a_delivery_fails_when_the_schedule_is_over(
    client: Any, services: Any, receiver: Receiver, start_dispatcher: Any
) -> None:
    caller = seller(services)
    receiver.answer(lambda _: Reply(500))
    job_id = order(services, caller, receiver.url())
    start_dispatcher()
    services.ledger.complete_job(caller.id, job_id, OUTPUTS)
    (delivery,) = settled(client, caller, job_id)
    assert delivery["status"] == "failed"
    assert len(delivery["attempts"]) == len(SCHEDULE) == len(receiver.requests)


def test_410_stops_that_endpoint(
    client: Any, services: Any, receiver: Receiver, start_dispatcher: Any
) -> None:
    caller = seller(services)
    secret = secret_of(client, caller)
    receiver.answer(lambda r: Reply(410) if r.path == "/gone" else Reply(200))
    first = order(services, caller, receiver.url("/gone"))
    second = order(services, caller, receiver.url("/gone"))  # ordered before the 410
    elsewhere = order(services, caller, receiver.url("/other"))
    start_dispatcher()
    services.ledger.complete_job(caller.id, first, OUTPUTS)
    (stopped,) = settled(client, caller, first)
    assert stopped["status"] == "stopped" and [a["status_code"] for a in stopped["attempts"]] == [410]
    services.ledger.complete_job(caller.id, second, OUTPUTS)
    services.ledger.complete_job(caller.id, elsewhere, OUTPUTS)
    (other,) = settled(client, caller, elsewhere)
    assert other["status"] == "delivered"  # another endpoint goes on
    (never,) = settled(client, caller, second)
    assert never["status"] == "stopped" and never["attempts"] == []
    assert len(receiver.at("/gone")) == 1
    # A job ordered after the 410 names the endpoint again: it is tried.
    receiver.answer(lambda _: Reply(200))
    third = order(services, caller, receiver.url("/gone"))
    services.ledger.complete_job(caller.id, third, OUTPUTS)
    (again,) = settled(client, caller, third)
    assert again["status"] == "delivered"
    assert [p["data"]["id"] for p in (r.verified(secret) for r in receiver.at("/gone"))] == [
        str(first),
        str(third),
    ]


def test_retry_after_is_honoured_on_429_and_503(
    client: Any, services: Any, receiver: Receiver, start_dispatcher: Any
) -> None:
    caller = seller(services)
    answers = iter([Reply(503, {"Retry-After": "2"}), Reply(429, {"Retry-After": "1"}), Reply(200)])
    receiver.answer(lambda _: next(answers))
    job_id = order(services, caller, receiver.url())
    start_dispatcher()
    services.ledger.complete_job(caller.id, job_id, OUTPUTS)
    got = receiver.wait_for(lambda got: len(got) >= 3, what="three attempts")
    assert got[1].at - got[0].at >= 2.0  # not the schedule's 0.3 s
    assert got[2].at - got[1].at >= 1.0
    (delivery,) = settled(client, caller, job_id)
    assert [a["status_code"] for a in delivery["attempts"]] == [503, 429, 200]


def test_redirects_are_not_followed_and_answers_are_read_up_to_a_limit(
    client: Any, services: Any, receiver: Receiver, start_dispatcher: Any
) -> None:
    caller = seller(services)
    receiver.answer(
        lambda r: (
            Reply(302, {"Location": "/target"}) if r.path == "/moved" else Reply(200, body=b"x" * 200_000)
        )
    )
    moved = order(services, caller, receiver.url("/moved"))
    large = order(services, caller, receiver.url("/large"))
    start_dispatcher()
    services.ledger.complete_job(caller.id, moved, OUTPUTS)
    services.ledger.complete_job(caller.id, large, OUTPUTS)
    (redirected,) = settled(client, caller, moved)
    assert redirected["status"] == "failed"
    assert all("redirects are not followed (302" in a["error"] for a in redirected["attempts"])
    assert receiver.at("/target") == []
    (answered,) = settled(client, caller, large)
    assert answered["status"] == "delivered"
    assert answered["attempts"][0]["response_body"] == "x" * services.settings.webhook_response_max_bytes


def test_a_slow_endpoint_never_delays_another_accounts_deliveries(
    client: Any, services: Any, receiver: Receiver, start_dispatcher: Any
) -> None:
    slow_seller, quick_seller = seller(services), seller(services)
    receiver.answer(lambda r: Reply(200, delay=5.0) if r.path == "/slow" else Reply(200))
    slow_jobs = [order(services, slow_seller, receiver.url("/slow")) for _ in range(6)]
    quick = order(services, quick_seller, receiver.url("/quick"))
    start_dispatcher()
    for job_id in slow_jobs:
        services.ledger.complete_job(slow_seller.id, job_id, OUTPUTS)
    receiver.wait_for(lambda got: len(got) >= 2, what="the slow endpoint's first requests")
    completed = time.monotonic()
    services.ledger.complete_job(quick_seller.id, quick, OUTPUTS)
    (arrived,) = receiver.wait_for(
        lambda got: any(r.path == "/quick" for r in got), what="the quick webhook"
    )[-1:]
    assert arrived.path == "/quick" and arrived.at - completed < 1.0
    # at most webhook_max_in_flight_per_account (2) of the slow account's at once, each cut at the timeout
    first = settled(client, slow_seller, slow_jobs[0])[0]
    assert first["attempts"][0]["error"] == f"no answer within {TIMEOUT_S:g} s"
    assert first["attempts"][0]["duration_ms"] < TIMEOUT_S * 1000 + 500
    slow_arrivals = sorted(r.at for r in receiver.at("/slow"))
    assert all(b - a > 0.5 for a, b in zip(slow_arrivals, slow_arrivals[2:], strict=False))


def test_a_name_that_resolves_to_a_private_address_at_delivery_is_refused(
    client: Any, services: Any, receiver: Receiver, start_dispatcher: Any
) -> None:
    """The job was accepted while its host resolved to a public address; by delivery time its
    DNS answers loopback (DNS rebinding): nothing is sent, at any attempt."""
    caller = seller(services)

    async def rebound(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "hooks.example.test" else await resolve_async(host, port)

    strict = services.settings.model_copy(update={"webhook_allow_private_networks": False})
    renamed = order(services, caller, f"http://hooks.example.test:{receiver.port}/hooks")
    literal = order(services, caller, f"http://[::ffff:127.0.0.1]:{receiver.port}/hooks")
    metadata = order(services, caller, "http://169.254.169.254/latest/meta-data/")
    start_dispatcher(strict, resolver=rebound)
    for job_id in (renamed, literal, metadata):
        services.ledger.complete_job(caller.id, job_id, OUTPUTS)
    reasons = {}
    for job_id in (renamed, literal, metadata):
        (delivery,) = settled(client, caller, job_id)
        assert delivery["status"] == "failed" and len(delivery["attempts"]) == len(SCHEDULE)
        assert all(a["status_code"] is None for a in delivery["attempts"])
        reasons[job_id] = delivery["attempts"][0]["error"]
    assert receiver.requests == []
    assert (
        reasons[renamed]
        == "webhooks may not go to hooks.example.test: it does not resolve to public addresses only"
    )
    assert "loopback address (inside an IPv6 address)" in reasons[literal]
    assert "link-local" in reasons[metadata]


def test_both_secrets_sign_during_the_rotation_window_and_only_the_new_one_after(
    client: Any, services: Any, receiver: Receiver, start_dispatcher: Any
) -> None:
    caller = seller(services)
    old = secret_of(client, caller)
    rotated = client.post("/api/v1/webhooks/default/secret/rotate", headers=caller.headers)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["key"]
    assert new != old and secret_of(client, caller) == new
    start_dispatcher()
    during = order(services, caller, receiver.url())
    services.ledger.complete_job(caller.id, during, OUTPUTS)
    (first,) = receiver.wait_for(lambda got: len(got) >= 1)
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    first.verified(old)
    first.verified(new)
    window_ends = time.monotonic() + services.settings.webhook_secret_overlap_s
    wait_until(lambda: time.monotonic() > window_ends, 10, "the rotation window to end")
    after = order(services, caller, receiver.url())
    services.ledger.complete_job(caller.id, after, OUTPUTS)
    second = receiver.wait_for(lambda got: len(got) >= 2)[1]
    assert len(second.headers["webhook-signature"].split(" ")) == 1
    second.verified(new)
    with pytest.raises(WebhookVerificationError):
        second.verified(old)


def test_a_redelivery_sends_the_same_message_again(
    client: Any, services: Any, receiver: Receiver, start_dispatcher: Any
) -> None:
    caller = seller(services)
    secret = secret_of(client, caller)
    receiver.answer(lambda _: Reply(500))
    job_id = order(services, caller, receiver.url())
    start_dispatcher()
    services.ledger.complete_job(caller.id, job_id, OUTPUTS)
    (failed,) = settled(client, caller, job_id)
    assert failed["status"] == "failed"
    receiver.answer(lambda _: Reply(200))
    path = f"/api/v1/vto/jobs/{job_id}/webhook-deliveries/{failed['id']}/redeliver"
    asked = client.post(path, headers=caller.headers)
    assert asked.status_code == 202, asked.text
    assert asked.json()["redelivery_requested"] is True
    got = receiver.wait_for(lambda got: len(got) == len(SCHEDULE) + 1, what="the redelivery")
    assert got[-1].webhook_id == got[0].webhook_id and got[-1].body == got[0].body
    got[-1].verified(secret)
    delivered = wait_until(
        lambda: (d := deliveries(client, caller, job_id)[0])["status"] == "delivered" and d, 10
    )
    assert delivered["attempts"][-1]["manual"] is True and delivered["attempts"][-1]["status_code"] == 200
    assert delivered["redelivery_requested"] is False
    other = make_user(services)
    assert client.post(path, headers=other.headers).status_code == 404
    missing = f"/api/v1/vto/jobs/{job_id}/webhook-deliveries/{uuid.uuid4()}/redeliver"
    assert client.post(missing, headers=caller.headers).status_code == 404


def test_a_restart_of_the_webhook_process_mid_schedule_loses_and_duplicates_nothing(
    client: Any, services: Any, receiver: Receiver, pg_url: str
) -> None:
    """``vto webhooks`` as its own process, killed (SIGKILL) between two attempts of a retry
    schedule, and started again: every message is delivered, the retried one with its
    webhook-id, and nothing is sent twice beyond the attempts the log shows."""
    caller = seller(services)
    secret = secret_of(client, caller)
    answers = iter([Reply(500), Reply(500)])
    receiver.answer(lambda r: next(answers, Reply(200)) if r.path == "/retried" else Reply(200))
    env = {
        **os.environ,
        "VTO_DATABASE_URL": pg_url,
        "VTO_JWT_SECRET": services.secret,
        "VTO_DATA_DIR": str(services.settings.data_dir),
        "VTO_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        "VTO_WEBHOOK_RETRY_SCHEDULE_S": "[0, 3, 3, 3]",
        "VTO_WEBHOOK_RETRY_JITTER": "0",
        "VTO_WEBHOOK_POLL_INTERVAL_S": "0.2",
    }
    command = [sys.executable, "-c", "from infra.cli import main; main()", "webhooks"]

    def attempts_logged() -> int:
        with psycopg.connect(pg_url) as conn:
            row = conn.execute("SELECT count(*) FROM webhook_attempts").fetchone()
        return int(row[0]) if row else 0

    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        retried = order(services, caller, receiver.url("/retried"))
        services.ledger.complete_job(caller.id, retried, OUTPUTS)
        receiver.wait_for(lambda got: len(got) >= 1, 60, "the first attempt")
        wait_until(lambda: attempts_logged() == 1, 10, "the first attempt to be logged")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    # while no webhook process runs: another job finishes
    meanwhile = order(services, caller, receiver.url("/meanwhile"))
    services.ledger.complete_job(caller.id, meanwhile, OUTPUTS)
    second = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (retried_delivery,) = settled(client, caller, retried, timeout=60)
        (meanwhile_delivery,) = settled(client, caller, meanwhile, timeout=60)
    finally:
        second.terminate()
        second.wait(timeout=30)
    assert retried_delivery["status"] == meanwhile_delivery["status"] == "delivered"
    assert [a["status_code"] for a in retried_delivery["attempts"]] == [500, 500, 200]
    retried_requests = receiver.at("/retried")
    assert [r.webhook_id for r in retried_requests] == [retried_delivery["webhook_id"]] * 3
    assert {r.verified(secret)["data"]["id"] for r in retried_requests} == {str(retried)}
    assert len(receiver.at("/meanwhile")) == 1
    assert len(receiver.requests) == attempts_logged() == 4


def test_a_body_that_cannot_be_rendered_holds_up_nothing_else(
    client: Any, services: Any, receiver: Receiver, start_dispatcher: Any
) -> None:
    """Rendering a job's body fails once (its read model is unreachable): that message is
    tried again a moment later, and the others claimed with it are sent at once."""
    caller = seller(services)
    real = renderer(services)
    unlucky = order(services, caller, receiver.url("/unlucky"))
    fine = order(services, caller, receiver.url("/fine"))
    failing = {unlucky}

    def flaky(job_id: uuid.UUID) -> Any:
        if job_id in failing:
            failing.discard(job_id)
            raise RuntimeError("the read model is unreachable")
        return real(job_id)

    dispatcher = start_dispatcher(render=flaky)
    services.ledger.complete_job(caller.id, fine, OUTPUTS)
    services.ledger.complete_job(caller.id, unlucky, OUTPUTS)
    got = receiver.wait_for(lambda got: {r.path for r in got} == {"/fine", "/unlucky"}, what="both webhooks")
    assert len(got) == 2 and not failing
    assert dispatcher.sender.errors >= 1 and dispatcher.sender.running
    (delivery,) = settled(client, caller, unlucky)
    assert [a["status_code"] for a in delivery["attempts"]] == [200]
