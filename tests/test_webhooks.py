"""Webhook routes through HTTP (``/webhooks/default/secret``, its rotation, a job's deliveries),
the webhook fields of ``POST /vto/jobs`` with their SSRF refusals, and one job's whole life
through the embedded pipeline to a real receiver. The dispatcher's rules (retries, 410,
Retry-After, restarts, delivery-time refusals, the rotation window) are tested in
tests/pipeline/test_webhooks.py."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from command_api.deps import get_webhook_targets
from command_api.webhooks.service import job_renderer
from generator_worker.embedded import start_pipeline
from infra.settings import Settings
from pipeline.webhooks.dispatcher import WebhookDispatcher
from pipeline.webhooks.targets import TargetPolicy
from tests.api_factories import Caller, make_user
from tests.test_vto import catalog, job_body, wait_terminal, wait_until
from tests.webhook_receiver import Receiver, receiving

PUBLIC = "93.184.215.14"  # a public address, for the fake resolver
REFUSED = {
    "http://127.0.0.1/hooks": "loopback",
    "http://10.0.0.1/hooks": "private",
    "http://[::1]:8080/hooks": "loopback",
    "http://[::ffff:127.0.0.1]/hooks": "loopback address (inside an IPv6 address)",
    "http://169.254.169.254/latest/meta-data/": "link-local",
    "http://localhost:9000/hooks": "localhost: it does not resolve to public addresses only",
    "http://internal.example.test/hooks": "internal.example.test: it does not resolve to public",
    "http://[2001:db8::1]/": "2001:db8::1: a private address",
    "http://0.0.0.0/": "unspecified",
    "http://[fd12::1]/": "unique-local",
    "http://224.0.0.1/": "multicast",
    "http://2130706433/hooks": "2130706433: it does not resolve to public",
    "ftp://hooks.example.test/": "http or https",
    "file:///etc/passwd": "http or https",
    "https://user:secret@hooks.example.test/": "user name or password",
    "http://nowhere.example.test/": "nowhere.example.test: it does not resolve to public",
}


def fake_resolver(host: str, port: int) -> list[str]:
    """DNS for the tests (not ours to run): two names of the example zone, else the system's."""
    from pipeline.webhooks.targets import resolve

    known = {"hooks.example.test": [PUBLIC], "internal.example.test": ["10.1.2.3"]}
    if host in known:
        return known[host]
    return [] if host.endswith(".example.test") else resolve(host, port)


@pytest.fixture
def strict_client(client: Any) -> Iterator[Any]:
    """The API with private targets refused (the default) and the fake resolver."""
    client.app.dependency_overrides[get_webhook_targets] = lambda: TargetPolicy(False, fake_resolver)
    yield client
    client.app.dependency_overrides.clear()


def seller(services: Any, credits: int = 10) -> Caller:
    caller = make_user(services)
    services.ledger.grant(caller.id, "test", credits=credits)
    return caller


def test_the_signing_secret_is_one_per_account_and_standard(client: Any, services: Any) -> None:
    caller, other = seller(services), seller(services)
    first = client.get("/api/v1/webhooks/default/secret", headers=caller.headers)
    assert first.status_code == 200, first.text
    assert first.headers["cache-control"] == "no-store"
    key = first.json()["key"]
    assert key.startswith("whsec_")
    assert 24 <= len(base64.b64decode(key.removeprefix("whsec_"), validate=True)) <= 64
    assert client.get("/api/v1/webhooks/default/secret", headers=caller.headers).json()["key"] == key
    assert client.get("/api/v1/webhooks/default/secret", headers=other.headers).json()["key"] != key
    assert client.get("/api/v1/webhooks/default/secret").status_code == 401


def test_a_rotation_keeps_the_old_secret_signing_for_24_hours(client: Any, services: Any) -> None:
    caller = seller(services)
    old = client.get("/api/v1/webhooks/default/secret", headers=caller.headers).json()["key"]
    first = client.post("/api/v1/webhooks/default/secret/rotate", headers=caller.headers)
    assert first.status_code == 200, first.text
    new = first.json()["key"]
    assert new != old
    assert client.get("/api/v1/webhooks/default/secret", headers=caller.headers).json()["key"] == new
    with psycopg.connect(services.url) as conn:
        rows = conn.execute(
            "SELECT secret, expires_at - now() FROM webhook_secrets WHERE user_id = %s "
            "AND (expires_at IS NULL OR expires_at > now()) ORDER BY id",
            (caller.id,),
        ).fetchall()
    assert [base64.b64encode(bytes(r[0])).decode() for r in rows] == [old[6:], new[6:]]
    assert timedelta(hours=23, minutes=59) < rows[0][1] <= timedelta(hours=24)
    assert rows[1][1] is None
    # Rotating again retires the oldest at once: two secrets sign at most.
    third = client.post("/api/v1/webhooks/default/secret/rotate", headers=caller.headers).json()["key"]
    with psycopg.connect(services.url) as conn:
        signing = conn.execute(
            "SELECT count(*) FROM webhook_secrets WHERE user_id = %s "
            "AND (expires_at IS NULL OR expires_at > now())",
            (caller.id,),
        ).fetchone()
    assert signing is not None and signing[0] == 2 and third not in (old, new)


@pytest.mark.parametrize(("url", "why"), list(REFUSED.items()))
def test_a_job_whose_webhook_may_not_go_there_is_refused_and_charges_nothing(
    strict_client: Any, services: Any, url: str, why: str
) -> None:
    caller = seller(services)
    items = catalog(strict_client, caller)
    response = strict_client.post(
        "/api/v1/vto/jobs", json={**job_body(items), "webhook": url}, headers=caller.headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "webhook_url_not_allowed"
    assert why in response.json()["detail"]
    assert strict_client.get("/api/v1/points", headers=caller.headers).json()["credit"] == 10
    assert strict_client.get("/api/v1/vto/jobs", headers=caller.headers).json()["items"] == []


def test_a_job_records_and_shows_its_webhook(strict_client: Any, services: Any) -> None:
    caller = seller(services)
    items = catalog(strict_client, caller)
    body = {**job_body(items), "webhook": "https://hooks.example.test/vto?shop=7"}
    created = strict_client.post(
        "/api/v1/vto/jobs",
        json={**body, "webhook_events_filter": ["completed", "start", "completed"]},
        headers=caller.headers,
    )
    assert created.status_code == 202, created.text
    job = created.json()
    assert (job["webhook"], job["webhook_events_filter"]) == (body["webhook"], ["completed", "start"])
    shown = strict_client.get(f"/api/v1/vto/jobs/{job['id']}", headers=caller.headers).json()
    assert (shown["webhook"], shown["webhook_events_filter"]) == (body["webhook"], ["completed", "start"])
    default = strict_client.post(
        "/api/v1/vto/jobs", json={**body, "options": {"seed": 9}}, headers=caller.headers
    )
    assert default.json()["webhook_events_filter"] == ["completed", "progress", "start"]
    plain = strict_client.post(
        "/api/v1/vto/jobs", json=job_body(items, seed=5), headers=caller.headers
    ).json()
    assert (plain["webhook"], plain["webhook_events_filter"]) == (None, None)
    # The same Idempotency-Key and body: the same job.
    headers = {**caller.headers, "Idempotency-Key": "hook-1"}
    once = strict_client.post("/api/v1/vto/jobs", json=body, headers=headers).json()
    again = strict_client.post("/api/v1/vto/jobs", json=body, headers=headers).json()
    assert once["id"] == again["id"] and again["webhook"] == body["webhook"]


@pytest.mark.parametrize(
    "extra",
    [
        {"webhook_events_filter": ["completed"]},  # a filter without a webhook
        {"webhook": "https://hooks.example.test/", "webhook_events_filter": []},
        {"webhook": "https://hooks.example.test/", "webhook_events_filter": ["output"]},
        {"webhook": ""},
        {"webhook": "https://hooks.example.test/" + "a" * 2100},
        {"webhook": "https://hooks.example.test/\u0000"},
    ],
)
def test_bad_webhook_fields_are_422(strict_client: Any, services: Any, extra: dict[str, Any]) -> None:
    caller = seller(services)
    items = catalog(strict_client, caller)
    response = strict_client.post(
        "/api/v1/vto/jobs", json={**job_body(items), **extra}, headers=caller.headers
    )
    assert response.status_code == 422, response.text
    assert strict_client.get("/api/v1/points", headers=caller.headers).json()["credit"] == 10


def test_deliveries_are_the_requesters_alone(strict_client: Any, services: Any) -> None:
    caller, other = seller(services), seller(services)
    items = catalog(strict_client, caller)
    job = strict_client.post(
        "/api/v1/vto/jobs",
        json={**job_body(items), "webhook": "https://hooks.example.test/"},
        headers=caller.headers,
    ).json()
    path = f"/api/v1/vto/jobs/{job['id']}/webhook-deliveries"
    assert strict_client.get(path, headers=caller.headers).json() == {"items": [], "next_cursor": None}
    assert strict_client.get(path, headers=other.headers).status_code == 404
    assert (
        strict_client.get(
            f"/api/v1/vto/jobs/{uuid.uuid4()}/webhook-deliveries", headers=caller.headers
        ).status_code
        == 404
    )
    assert strict_client.get(path).status_code == 401
    assert strict_client.get(f"{path}?cursor=nonsense", headers=caller.headers).status_code == 400


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


def test_a_job_with_a_webhook_runs_through_the_embedded_pipeline(
    client: Any, services: Any, receiver: Receiver
) -> None:
    """As in ``vto serve``: the API, the pipeline on the in-process queue and the dispatcher in
    one process; the receiver gets job.completed with links it can fetch."""
    client.app.dependency_overrides[get_webhook_targets] = lambda: TargetPolicy(True)
    settings = services.settings.model_copy(
        update={"webhook_allow_private_networks": True, "webhook_poll_interval_s": 0.2}
    )
    render = job_renderer(services.engine, services.storage, settings.webhook_link_ttl_s, "http://testserver")
    caller = seller(services)
    secret = client.get("/api/v1/webhooks/default/secret", headers=caller.headers).json()["key"]
    items = catalog(client, caller)
    pipeline = start_pipeline(services.settings, services.url, services.ledger, services.storage)
    try:
        with WebhookDispatcher.build(settings, services.url, render):
            job = client.post(
                "/api/v1/vto/jobs",
                json={**job_body(items), "webhook": receiver.url()},
                headers=caller.headers,
            )
            assert job.status_code == 202, job.text
            done = wait_terminal(client, caller, job.json()["id"])
            got = receiver.wait_for(
                lambda got: any(r.verified(secret)["type"] == "job.completed" for r in got),
                what="job.completed",
            )
    finally:
        pipeline.stop()
        client.app.dependency_overrides.clear()
    # No order of arrival is promised (docs/webhooks.md). job.started comes from the recorded
    # progress, which follows another topic than the result: on a loaded machine the result
    # can be applied first, and the job then ends with job.completed alone. A start that was
    # sent is dated before the end.
    payloads = {p["type"]: p for p in (r.verified(secret) for r in got)}
    assert set(payloads) <= {"job.started", "job.progress", "job.completed"}
    completed = payloads["job.completed"]
    if "job.started" in payloads:
        start = datetime.fromisoformat(payloads["job.started"]["timestamp"])
        assert start <= datetime.fromisoformat(completed["timestamp"])
    assert (
        completed["type"] == "job.completed" and completed["data"]["status"] == done["status"] == "succeeded"
    )
    link = completed["data"]["outputs"][0]["url"]
    assert link.startswith("http://testserver/api/v1/files/")
    assert client.get(link.removeprefix("http://testserver")).status_code == 200
    deliveries = wait_until(
        lambda: (
            (
                found := client.get(
                    f"/api/v1/vto/jobs/{done['id']}/webhook-deliveries", headers=caller.headers
                ).json()["items"]
            )
            and all(d["status"] == "delivered" for d in found)
            and found
        ),
        10,
    )
    assert {d["event"] for d in deliveries} >= {"job.started", "job.completed"}


OPS_TOKEN = "operator-token-0123456789abcdef"


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    """The API's settings with an operator token (``/metrics`` needs it)."""
    return Settings(_env_file=None, data_dir=tmp_path / "data", ops_token=OPS_TOKEN)  # type: ignore[call-arg]


def test_metrics_show_the_webhook_backlog(client: Any, services: Any) -> None:
    caller = seller(services)
    job_id = uuid.uuid4()
    services.ledger.request_job(
        caller.id, job_id, "image", {"project_id": "p", "webhook": "https://x.example/"}
    )
    with psycopg.connect(services.url, autocommit=True) as conn:  # a message waiting a minute already
        conn.execute(
            "INSERT INTO webhook_messages (id, job_id, user_id, event_type, event_key, url, event_at, "
            "requested_at, next_attempt_at, created_at) VALUES (gen_random_uuid(), %s, %s, 'job.completed', "
            "'succeeded', 'https://x.example/', now(), now(), now(), now() - interval '60 seconds')",
            (job_id, caller.id),
        )
    text = client.get("/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}"}).text
    lines = {
        line.split(" ")[0]: line.split(" ")[1] for line in text.splitlines() if line.startswith("vto_webhook")
    }
    assert float(lines["vto_webhook_pending_messages"]) == 1
    assert 60 <= float(lines["vto_webhook_oldest_undelivered_seconds"]) < 120
    assert "vto_webhook_attempts_total" in text or "# TYPE vto_webhook_attempts counter" in text
