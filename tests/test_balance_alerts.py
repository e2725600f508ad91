"""Balance alerts: PUT/GET /points/alerts; one ``balance.low`` per crossing of a threshold,
re-armed when the balance is back at it or above, mailed (a real SMTP server) and, for an
account with webhooks, sent as a signed webhook."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infra.mail import mailer_from_settings
from infra.settings import Settings
from pipeline.balance_alerts import BalanceAlerts
from pipeline.webhooks.dispatcher import WebhookDispatcher
from tests.api_factories import Caller, make_user
from tests.factories import job_request
from tests.mail_fixtures import Inbox, smtp_server  # noqa: F401  (fixture)
from tests.pipeline.conftest import wait_until
from tests.webhook_receiver import Receiver, receiving


@pytest.fixture
def api_settings(tmp_path: Path, smtp_server: Inbox) -> Settings:  # noqa: F811
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        smtp_url=smtp_server.url,
        webhook_allow_private_networks=True,
        webhook_poll_interval_s=0.2,
        balance_alert_interval_s=0.1,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


def _alerts(services: Any) -> BalanceAlerts:
    return BalanceAlerts(services.url, mailer_from_settings(services.settings), interval=0.1)


def _charge(services: Any, caller: Caller, times: int = 1) -> None:
    for _ in range(times):
        result = services.ledger.request_job(caller.id, uuid.uuid4(), "image", job_request())
    services.wait_for(result.position)


def _rows(services: Any, user_id: uuid.UUID) -> list[tuple[Any, ...]]:
    with psycopg.connect(services.url) as conn:
        return conn.execute(
            "SELECT source, below, balance, mailed_at IS NOT NULL FROM balance_alerts WHERE user_id = %s "
            "ORDER BY position",
            (user_id,),
        ).fetchall()


def test_put_and_get_alerts(client: Any, services: Any) -> None:
    caller = make_user(services)
    empty = {"credits_below": None, "lookbook_tickets_below": None, "video_tickets_below": None}
    assert client.get("/api/v1/points/alerts", headers=caller.headers).json() == empty
    body = {"credits_below": 5, "lookbook_tickets_below": 2, "video_tickets_below": None}
    response = client.put("/api/v1/points/alerts", json=body, headers=caller.headers)
    assert response.status_code == 200 and response.json() == body
    assert client.get("/api/v1/points/alerts", headers=caller.headers).json() == body
    cleared = client.put("/api/v1/points/alerts", json={"credits_below": 7}, headers=caller.headers)
    assert cleared.json() == empty | {"credits_below": 7}
    for bad in ({"credits_below": 0}, {"credits_below": "5"}, {"credits_below": 1.5}, {"gold_below": 1}):
        response = client.put("/api/v1/points/alerts", json=bad, headers=caller.headers)
        assert response.status_code == 422 and response.json()["code"] == "validation_error", bad
    assert client.get("/api/v1/points/alerts", headers=caller.headers).json() == empty | {"credits_below": 7}
    assert client.put("/api/v1/points/alerts", json=body).status_code == 401


def test_one_alert_per_crossing_rearmed_above_and_mailed(
    client: Any,
    services: Any,
    smtp_server: Inbox,  # noqa: F811
) -> None:
    caller = make_user(services)
    services.ledger.grant_credits(caller.id, 7, "test")
    alerts = _alerts(services)
    client.put("/api/v1/points/alerts", json={"credits_below": 5}, headers=caller.headers)
    _charge(services, caller, 2)  # 7 -> 5: not below
    assert alerts.catch_up() == 0 and _rows(services, caller.id) == []
    _charge(services, caller, 3)  # 5 -> 4 (the crossing) -> 3 -> 2
    assert alerts.catch_up() == 1
    assert alerts.catch_up() == 0  # nothing twice
    assert _rows(services, caller.id) == [("credit", 5, 4, True)]
    (mail,) = smtp_server.to(caller.user.email)
    assert "Balance low" in mail["Subject"] and "credit" in mail["Subject"]
    assert "below the alert threshold of 5" in mail.get_body(("plain",)).get_content()
    # up to 4 (still below): no re-arm; up to 5: re-armed; the next crossing alerts again
    result = services.ledger.grant_credits(caller.id, 2, "top-up")
    services.wait_for(result.position)
    _charge(services, caller)  # 4 -> 3
    result = services.ledger.grant_credits(caller.id, 2, "top-up")  # 3 -> 5
    services.wait_for(result.position)
    assert alerts.catch_up() == 0
    _charge(services, caller)  # 5 -> 4: the second crossing
    assert alerts.catch_up() == 1
    assert [r[2] for r in _rows(services, caller.id)] == [4, 4]
    assert len(smtp_server.to(caller.user.email)) == 2


def test_a_ticket_threshold_and_no_alert_for_other_accounts(
    client: Any,
    services: Any,
    smtp_server: Inbox,  # noqa: F811
) -> None:
    caller, other = make_user(services), make_user(services)
    for user in (caller, other):
        services.ledger.grant(user.id, "test", tickets={"lookbook": 2})
    client.put("/api/v1/points/alerts", json={"lookbook_tickets_below": 2}, headers=caller.headers)
    _charge(services, caller)
    _charge(services, other)
    assert _alerts(services).catch_up() == 1
    assert _rows(services, caller.id) == [("ticket:lookbook", 2, 1, True)]
    assert _rows(services, other.id) == [] and smtp_server.to(other.user.email) == []


def test_a_failed_mail_is_retried_and_the_alert_is_made_once(
    client: Any, services: Any, tmp_path: Path
) -> None:
    caller = make_user(services)
    services.ledger.grant_credits(caller.id, 2, "test")
    client.put("/api/v1/points/alerts", json={"credits_below": 2}, headers=caller.headers)
    _charge(services, caller)
    broken = Settings(_env_file=None, data_dir=tmp_path, smtp_url="smtp://127.0.0.1:9")  # type: ignore[call-arg]
    failing = BalanceAlerts(services.url, mailer_from_settings(broken), interval=0.1)
    assert failing.catch_up() == 1
    assert _rows(services, caller.id) == [("credit", 2, 1, False)]
    with psycopg.connect(services.url, autocommit=True) as conn:  # as if a crash lost the position
        conn.execute("UPDATE projection_tracking SET position = 0 WHERE name = 'balance_alerts'")
    assert _alerts(services).catch_up() == 1  # found again: the same row
    assert _rows(services, caller.id) == [("credit", 2, 1, True)]


def test_an_account_with_webhooks_gets_a_signed_balance_low(
    client: Any,
    services: Any,
    receiver: Receiver,
    smtp_server: Inbox,  # noqa: F811
) -> None:
    caller = make_user(services)
    services.ledger.grant_credits(caller.id, 3, "test")
    secret = client.get("/api/v1/webhooks/default/secret", headers=caller.headers).json()["key"]
    client.put("/api/v1/points/alerts", json={"credits_below": 3}, headers=caller.headers)
    request = job_request(webhook=receiver.url(), webhook_events_filter=["start"])
    result = services.ledger.request_job(caller.id, uuid.uuid4(), "image", request)  # 3 -> 2
    services.wait_for(result.position)
    render = lambda job_id: {}  # noqa: E731 - no job message is wanted here
    with WebhookDispatcher.build(services.settings, services.url, render):
        (got,) = receiver.wait_for(lambda got: len(got) >= 1, what="the balance.low webhook")
        payload = got.verified(secret)
        assert payload["type"] == "balance.low"
        assert payload["data"] | {"alert_id": None} == {
            "alert_id": None,
            "user_id": str(caller.id),
            "source": "credit",
            "threshold": 3,
            "balance": 2,
            "position": payload["data"]["position"],
        }
        wait_until(lambda: smtp_server.to(caller.user.email), what="the mail")
    assert len(receiver.requests) == 1 and len(smtp_server.to(caller.user.email)) == 1
