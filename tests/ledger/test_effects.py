"""``ledger.effects``: what each event of an ``Account`` does, and the rules that apply it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from ledger.account import Account
from ledger.effects import (
    NOTHING,
    Charge,
    Effect,
    Flow,
    GrantedLot,
    JobChange,
    LotMove,
    Movement,
    Subscription,
    SubscriptionChange,
    Usage,
    UsageType,
    _meanings,
    effect,
    give_back_quota,
    held,
    move,
    use_quota,
)
from ledger.errors import UnknownSource
from ledger.policy import CREDIT, SUBSCRIPTION, PricingPolicy
from ledger.status import ReservationStatus

AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
POLICY = PricingPolicy()


@dataclass
class Holder:
    credits: int = 0
    tickets: dict[str, int] = field(default_factory=dict)


def _events(account: Account) -> list[Any]:
    return list(account.collect_events())


def _request(account: Account, kind: str = "image") -> UUID:
    job_id = uuid4()
    account.request_job(job_id, kind, {"n": str(job_id)}, POLICY, AT, None, timedelta(hours=1))
    return job_id


def _moving(movement: Movement, usage: Usage, **lots: Any) -> Effect:
    return Effect((movement,), usage=usage, **lots)


def test_grants_move_points_with_a_grant_line() -> None:
    account = Account.open(uuid4(), AT)
    account.grant_credits(5, "welcome", AT)
    account.grant_tickets("lookbook", 2, "promo", AT)
    opened, credits, tickets = _events(account)
    assert effect(opened) is NOTHING
    assert effect(credits) == _moving(
        Movement(CREDIT, 5, Flow.GRANTED),
        Usage(UsageType.GRANT, CREDIT, 5, "welcome"),
        lot=GrantedLot(2, CREDIT, 5, "paid", None, AT),
    )
    assert effect(tickets) == _moving(
        Movement("ticket:lookbook", 2, Flow.GRANTED),
        Usage(UsageType.GRANT, "ticket:lookbook", 2, "promo"),
        lot=GrantedLot(3, "ticket:lookbook", 2, "paid", None, AT),
    )


def test_subscription_changes_and_its_quota_day() -> None:
    account = Account.open(uuid4(), AT)
    end = AT + timedelta(days=30)
    account.activate_subscription("pro", end, 2, "bought", AT)
    job_id = _request(account)
    account.fail_job(job_id, {"code": "boom"}, AT)
    account.cancel_subscription("changed mind", AT)
    _, activated, reserved, requested, failed, refunded, cancelled = _events(account)
    fx = effect(activated)
    assert fx.subscription == SubscriptionChange(Subscription("pro", end, 2))
    assert fx.usage == Usage(UsageType.GRANT, SUBSCRIPTION, 0, "bought") and fx.movements == ()
    fx = effect(reserved)
    assert fx.movements == (Movement(SUBSCRIPTION, 0, Flow.RESERVED),)
    assert fx.job == JobChange(
        job_id, ReservationStatus.RESERVED, Charge(SUBSCRIPTION, 0), quota_day="2026-11-26"
    )
    assert effect(requested) is NOTHING
    assert effect(failed).job == JobChange(job_id, ReservationStatus.FAILED)
    assert effect(refunded).job == JobChange(job_id, refunded=Charge(SUBSCRIPTION, 0))
    assert effect(refunded).usage == Usage(UsageType.REFUND, SUBSCRIPTION, 0, "failed: boom")
    assert effect(cancelled) == Effect(subscription=SubscriptionChange(None))
    assert (account.quota_day, account.quota_used) == ("2026-11-26", 0)


def test_a_reservation_is_refunded_to_its_source_for_its_amount() -> None:
    account = Account.open(uuid4(), AT)
    account.grant_credits(7, "welcome", AT)
    job_id = _request(account, "video")
    account.cancel_job(job_id, "not needed", AT)
    *_, reserved, _requested, canceled, refunded = _events(account)
    fx = effect(reserved)
    assert fx.movements == (Movement(CREDIT, -5, Flow.RESERVED),)
    assert fx.movements[0].amount == 5  # the accounting counts what was reserved positive
    assert fx.usage == Usage(UsageType.RESERVATION, CREDIT, -5, "video job")
    assert effect(canceled).job == JobChange(job_id, ReservationStatus.CANCELED)
    assert fx.lot_moves == (LotMove(2, -5),)  # burnt from the grant's lot (version 2)
    fx = effect(refunded)
    assert fx.movements == (Movement(CREDIT, 5, Flow.REFUNDED),)
    assert fx.job == JobChange(job_id, refunded=Charge(CREDIT, 5))
    assert fx.usage == Usage(UsageType.REFUND, CREDIT, 5, "canceled: not needed")
    assert fx.lot_moves == (LotMove(2, 5),)


def test_a_charged_success_settles_a_late_one_is_free() -> None:
    account = Account.open(uuid4(), AT)
    account.grant_credits(2, "welcome", AT)
    settled, late = _request(account), _request(account)
    account.complete_job(settled, [], AT)
    account.expire_reservations(AT, AT + timedelta(hours=1))
    account.complete_job(late, [], AT + timedelta(hours=2))
    events = _events(account)
    completions = [effect(e) for e in events if isinstance(e, Account.JobCompleted)]
    assert completions[0].job == JobChange(settled, ReservationStatus.SUCCEEDED, settled=True)
    assert completions[0].usage == Usage(UsageType.SETTLEMENT, None, 0, "job succeeded")
    assert completions[0].movements == ()
    assert completions[1].job == JobChange(late, ReservationStatus.SUCCEEDED, settled=False)
    assert completions[1].usage is None
    [expired] = [effect(e) for e in events if isinstance(e, Account.JobFailed)]
    assert expired.job == JobChange(late, ReservationStatus.EXPIRED)


def test_an_adjustment_moves_its_delta() -> None:
    account = Account.open(uuid4(), AT)
    account.grant_credits(3, "welcome", AT)
    account.adjust(CREDIT, -2, "correction", "admin-1", AT)
    adjusted = _events(account)[-1]
    assert effect(adjusted) == _moving(
        Movement(CREDIT, -2, Flow.ADJUSTED),
        Usage(UsageType.ADJUSTMENT, CREDIT, -2, "correction"),
        lot_moves=(LotMove(2, -2),),
    )
    account.adjust(CREDIT, 4, "correction", "admin-1", AT)
    added = _events(account)[-1]
    assert effect(added).lot == GrantedLot(4, CREDIT, 4, "paid", None, AT)  # a lot of its own
    assert Movement(CREDIT, -2, Flow.ADJUSTED).amount == -2


def test_the_movements_of_a_history_add_up_to_the_account_balances() -> None:
    account = Account.open(uuid4(), AT)
    account.grant_credits(9, "welcome", AT)
    account.grant_tickets("lookbook", 1, "promo", AT)
    account.grant_tickets("video", 1, "promo", AT)
    jobs = [_request(account, kind) for kind in ("image", "image", "video", "video")]
    account.fail_job(jobs[0], {"code": "boom"}, AT)
    account.complete_job(jobs[1], [], AT)
    account.admin_refund(jobs[1], "goodwill", "admin-1", AT)
    account.adjust("ticket:lookbook", 3, "correction", "admin-1", AT)
    replayed = Holder()
    for event in _events(account):
        for movement in effect(event).movements:
            move(replayed, movement.source, movement.delta)
    # By hand: the images take the lookbook ticket, then a credit; the videos the video
    # ticket, then 5 credits; the failed image's ticket and the refunded image's credit come
    # back; 3 lookbook tickets are added: credits 9 - 1 - 5 + 1, lookbook 1 - 1 + 1 + 3.
    expected = (4, {"lookbook": 4, "video": 0})
    assert (replayed.credits, replayed.tickets) == expected
    assert (account.credits, account.tickets) == expected


def test_every_account_event_class_has_a_meaning_or_none_on_purpose() -> None:
    classes = {c for c in vars(Account).values() if isinstance(c, type) and issubclass(c, Account.Event)}
    # opening an account and a job's request (what to generate) change no balance or reservation
    silent = {Account.Event, Account.Created, Account.Opened, Account.JobRequested}
    assert classes - silent == set(_meanings())


def test_move_and_held() -> None:
    holder = Holder()
    move(holder, CREDIT, 3)
    move(holder, "ticket:video", 2)
    move(holder, SUBSCRIPTION, -1)  # the subscription has no balance
    assert (holder.credits, holder.tickets) == (3, {"video": 2})
    assert (held(holder, CREDIT), held(holder, "ticket:video"), held(holder, "ticket:lookbook")) == (3, 2, 0)
    assert held(holder, SUBSCRIPTION) is None
    with pytest.raises(UnknownSource):
        move(holder, "coupon", 1)
    with pytest.raises(UnknownSource):
        held(holder, "coupon")


def test_quota_counts_per_day_and_gives_back_only_today() -> None:
    assert use_quota(None, 0, "2026-11-26") == ("2026-11-26", 1)
    assert use_quota("2026-11-26", 1, "2026-11-26") == ("2026-11-26", 2)
    assert use_quota("2026-11-26", 2, "2026-11-27") == ("2026-11-27", 1)
    day = date(2026, 11, 27)
    assert give_back_quota(day, 2, day) == 1
    assert give_back_quota(day, 2, date(2026, 11, 26)) == 2  # yesterday's use stays counted
    assert give_back_quota(day, 2, None) == 2  # not paid by the subscription
    assert give_back_quota(day, 0, day) == 0
