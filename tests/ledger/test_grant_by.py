"""Grants record who made them (``by``: the acting admin's user id), and grant events stored
before that field existed (class version 1) still load, with ``by=None``."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from eventsourcing.persistence import StoredEvent

from ledger.account import Account
from ledger.application import LedgerApplication, event_mapper, event_transcoder
from tests.conftest import FakeClock
from tests.factories import new_user

GRANTS = (Account.CreditsGranted, Account.TicketsGranted, Account.SubscriptionActivated)


def test_a_grant_records_who_made_it(ledger: LedgerApplication, clock: FakeClock) -> None:
    user = new_user(ledger)
    admin = "7e1d2c3b-4a5f-4e6d-8c9b-0a1f2e3d4c5b"
    ledger.grant(user, "launch", 5, {"lookbook": 1}, ("pro", clock.now + timedelta(days=3), None), by=admin)
    ledger.grant(user, "by code", 1)
    grants = [e for e in ledger.repository.event_store.get(user) if isinstance(e, GRANTS)]
    assert [(type(e).__name__, e.reason, e.by) for e in grants] == [
        ("CreditsGranted", "launch", admin),
        ("TicketsGranted", "launch", admin),
        ("SubscriptionActivated", "launch", admin),
        ("CreditsGranted", "by code", None),
    ]
    assert ledger.account(user).credits == 6


def test_grant_events_stored_before_by_existed_still_load(
    ledger: LedgerApplication, clock: FakeClock
) -> None:
    user = new_user(ledger)
    ledger.grant(user, "old", 2, {"lookbook": 1}, ("pro", clock.now + timedelta(days=3), 2), by="someone")
    mapper, transcoder = event_mapper(), event_transcoder()
    for event in [e for e in ledger.repository.event_store.get(user) if isinstance(e, GRANTS)]:
        stored = mapper.to_stored_event(event)
        state = transcoder.decode(stored.state)
        lots = isinstance(event, (Account.CreditsGranted, Account.TicketsGranted))
        assert state.pop("class_version") == (3 if lots else 2) and state.pop("by") == "someone"
        if lots:  # v3: the lot's expiry and category
            assert (state.pop("expires_at"), state.pop("category")) == (None, "paid")
        old = dataclasses.replace(stored, state=transcoder.encode(state))  # as version 1 wrote it
        assert isinstance(old, StoredEvent)
        loaded = mapper.to_domain_event(old)
        assert type(loaded) is type(event) and loaded.by is None
        assert loaded.reason == "old"
        if lots:
            assert (loaded.expires_at, loaded.category) == (None, "paid")
