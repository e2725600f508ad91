"""The deduction policy (docs/ledger.md), on in-memory and PostgreSQL storage."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

from infra.ledger_store import memory_ledger
from infra.settings import Settings
from ledger.account import Account
from ledger.application import LedgerApplication
from ledger.errors import InsufficientEntitlement, UnknownJobKind, UnknownTicketType
from tests.conftest import FakeClock
from tests.factories import job_request, ledger_events, new_user


def balances(ledger: LedgerApplication, user_id: object) -> tuple[int, dict[str, int]]:
    account = ledger.account(user_id)  # type: ignore[arg-type]
    return account.credits, {k: v for k, v in account.tickets.items() if v}


def subscribe(ledger: LedgerApplication, clock: FakeClock, user_id: object, quota: int | None = None) -> None:
    ledger.activate_subscription(user_id, "pro", clock.now + timedelta(days=30), quota, "test")  # type: ignore[arg-type]


def test_subscription_pays_nothing_even_with_tickets_and_credits(
    ledger: LedgerApplication, clock: FakeClock
) -> None:
    user = new_user(ledger, credits=10, lookbook=2, video=2)
    subscribe(ledger, clock, user)
    image = ledger.request_job(user, uuid4(), "image", job_request()).value
    video = ledger.request_job(user, uuid4(), "video", job_request()).value
    assert (image.source, image.amount) == ("subscription", 0)
    assert (video.source, video.amount) == ("subscription", 0)
    assert balances(ledger, user) == (10, {"lookbook": 2, "video": 2})


def test_lookbook_ticket_pays_one_per_image(ledger: LedgerApplication) -> None:
    user = new_user(ledger, credits=10, lookbook=2)
    charge = ledger.request_job(user, uuid4(), "image", job_request()).value
    assert (charge.source, charge.amount) == ("ticket:lookbook", 1)
    assert balances(ledger, user) == (10, {"lookbook": 1})


def test_video_ticket_pays_one_per_video(ledger: LedgerApplication) -> None:
    user = new_user(ledger, credits=10, video=1)
    charge = ledger.request_job(user, uuid4(), "video", job_request()).value
    assert (charge.source, charge.amount) == ("ticket:video", 1)
    assert balances(ledger, user) == (10, {})


def test_credits_pay_the_cost_of_the_kind(ledger: LedgerApplication, settings: Settings) -> None:
    user = new_user(ledger, credits=10)
    image = ledger.request_job(user, uuid4(), "image", job_request()).value
    video = ledger.request_job(user, uuid4(), "video", job_request()).value
    assert (image.source, image.amount) == ("credit", settings.credit_costs["image"])
    assert (video.source, video.amount) == ("credit", settings.credit_costs["video"])
    assert balances(ledger, user)[0] == 10 - settings.credit_costs["image"] - settings.credit_costs["video"]


def test_tickets_only_pay_for_their_own_kind(ledger: LedgerApplication) -> None:
    user = new_user(ledger, lookbook=3, video=3)
    only_lookbook = new_user(ledger, lookbook=3)
    with pytest.raises(InsufficientEntitlement):
        ledger.request_job(only_lookbook, uuid4(), "video", job_request())
    only_video = new_user(ledger, video=3)
    with pytest.raises(InsufficientEntitlement):
        ledger.request_job(only_video, uuid4(), "image", job_request())
    assert balances(ledger, only_lookbook) == (0, {"lookbook": 3})
    assert balances(ledger, only_video) == (0, {"video": 3})
    # With both kinds of ticket, each kind takes its own.
    assert ledger.request_job(user, uuid4(), "video", job_request()).value.source == "ticket:video"
    assert ledger.request_job(user, uuid4(), "image", job_request()).value.source == "ticket:lookbook"


def test_priority_subscription_then_ticket_then_credit(ledger: LedgerApplication, clock: FakeClock) -> None:
    user = new_user(ledger, credits=2, lookbook=1)
    subscribe(ledger, clock, user, quota=1)
    sources = [ledger.request_job(user, uuid4(), "image", job_request()).value.source for _ in range(4)]
    assert sources == ["subscription", "ticket:lookbook", "credit", "credit"]
    with pytest.raises(InsufficientEntitlement):
        ledger.request_job(user, uuid4(), "image", job_request())


def test_daily_quota_resets_at_the_utc_day_boundary(ledger: LedgerApplication, clock: FakeClock) -> None:
    clock.now = clock.now.replace(hour=23, minute=59)
    user = new_user(ledger, credits=100)
    subscribe(ledger, clock, user, quota=2)
    day1 = [ledger.request_job(user, uuid4(), "image", job_request()).value.source for _ in range(3)]
    assert day1 == ["subscription", "subscription", "credit"]
    clock.advance(minutes=2)  # 00:01 the next day
    day2 = [ledger.request_job(user, uuid4(), "image", job_request()).value.source for _ in range(3)]
    assert day2 == ["subscription", "subscription", "credit"]
    assert ledger.account(user).quota_used_on(clock.now.date().isoformat()) == 2


def test_expired_subscription_no_longer_pays(ledger: LedgerApplication, clock: FakeClock) -> None:
    user = new_user(ledger, credits=5)
    subscribe(ledger, clock, user)
    clock.advance(days=31)
    assert ledger.request_job(user, uuid4(), "image", job_request()).value.source == "credit"
    assert ledger.expire_subscription(user).value is True
    assert ledger.account(user).subscription is None


def test_cancelled_subscription_no_longer_pays(ledger: LedgerApplication, clock: FakeClock) -> None:
    user = new_user(ledger, credits=5)
    subscribe(ledger, clock, user)
    assert ledger.cancel_subscription(user, "user asked").value is True
    assert ledger.request_job(user, uuid4(), "image", job_request()).value.source == "credit"


@pytest.mark.parametrize(
    ("tickets", "kind", "source"),
    [
        ({"lookbook": 1}, "image", "ticket:lookbook"),
        ({"video": 1}, "video", "ticket:video"),
        ({}, "image", "credit"),
    ],
)
def test_refund_returns_to_the_source_it_came_from(
    ledger: LedgerApplication, tickets: dict[str, int], kind: str, source: str
) -> None:
    user = new_user(ledger, credits=20, **tickets)
    before = balances(ledger, user)
    job = uuid4()
    charge = ledger.request_job(user, job, kind, job_request()).value
    assert charge.source == source
    assert balances(ledger, user) != before
    assert ledger.fail_job(user, job, {"code": "boom", "retryable": False}).value is True
    assert balances(ledger, user) == before
    refunds = [e for e in ledger_events(ledger, user) if isinstance(e, Account.Refunded)]
    assert [(r.source, r.amount, r.cause) for r in refunds] == [(source, charge.amount, "failed")]


def test_refund_of_a_subscription_job_restores_todays_quota(
    ledger: LedgerApplication, clock: FakeClock
) -> None:
    user = new_user(ledger, credits=10)
    subscribe(ledger, clock, user, quota=1)
    job = uuid4()
    assert ledger.request_job(user, job, "image", job_request()).value.source == "subscription"
    assert ledger.request_job(user, uuid4(), "image", job_request()).value.source == "credit"
    ledger.cancel_job(user, job)
    assert ledger.request_job(user, uuid4(), "image", job_request()).value.source == "subscription"


def test_rejection_appends_nothing(ledger: LedgerApplication) -> None:
    user = new_user(ledger, credits=0, video=1)
    before = len(ledger_events(ledger, user))
    position = ledger.position()
    with pytest.raises(InsufficientEntitlement) as info:
        ledger.request_job(user, uuid4(), "image", job_request())
    assert info.value.code == "insufficient_entitlement"
    assert len(ledger_events(ledger, user)) == before
    assert ledger.position() == position


def test_unknown_user_is_rejected_without_opening_an_account(ledger: LedgerApplication) -> None:
    stranger = uuid4()
    with pytest.raises(InsufficientEntitlement):
        ledger.request_job(stranger, uuid4(), "image", job_request())
    assert not ledger.has_account(stranger)


def test_unknown_kind_and_ticket_type_are_domain_errors(ledger: LedgerApplication) -> None:
    user = new_user(ledger, credits=10)
    with pytest.raises(UnknownJobKind):
        ledger.request_job(user, uuid4(), "hologram", job_request())
    with pytest.raises(UnknownTicketType):
        ledger.grant_tickets(user, "gold", 1, "test")


def test_a_new_ticket_type_is_configuration_only(clock: FakeClock) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        ticket_kinds={"lookbook": "image", "video": "video", "premium_video": "video"},
        credit_costs={"image": 2, "video": 7},
    )
    ledger = memory_ledger(settings, clock=clock)
    user = new_user(ledger, credits=7, premium_video=1)
    assert ledger.request_job(user, uuid4(), "video", job_request()).value.source == "ticket:premium_video"
    assert ledger.request_job(user, uuid4(), "video", job_request()).value.amount == 7
