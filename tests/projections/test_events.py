"""The log's rows decode, through the ledger's mapper (``Mapper.to_domain_event``), to the events
eventsourcing's own JSON transcoder makes of them: same classes, same state, the same upcasting
of old versions; an effect is computed once per event."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from uuid import UUID, uuid4

import psycopg
from eventsourcing.persistence import Mapper, StoredEvent

from ledger.account import Account
from ledger.application import LedgerApplication
from ledger.effects import effect
from projections.events import (
    EVENTS_TABLE,
    Notified,
    SharedDecoding,
    decode,
    ledger_mapper,
    select_after,
    worker_context,
)
from tests.ledger.transcoder_fixture import json_transcoder
from tests.projections.history import random_history


def test_rows_decode_to_what_the_json_transcoder_makes(pg_url: str, pg_ledger: LedgerApplication) -> None:
    random_history(pg_ledger, users=6, events=400, seed=3)
    mapper = Mapper[UUID](transcoder=json_transcoder())
    with psycopg.connect(pg_url) as conn, conn.cursor() as cur:
        rows = select_after(cur, 0, 10_000)
        topics = {r[0] for r in conn.execute(f"SELECT DISTINCT topic FROM {EVENTS_TABLE}")}
    assert len(rows) >= 400 and len(topics) >= 8
    fast = decode(rows, ledger_mapper())
    slow = [mapper.to_domain_event(StoredEvent(r[1], r[2], r[3], bytes(r[4]))) for r in rows]
    assert [n.position for n in fast] == [r[0] for r in rows]
    assert [type(n.event) for n in fast] == [type(e) for e in slow]
    assert [n.event.__dict__ for n in fast] == [e.__dict__ for e in slow]


def test_an_old_version_is_upcast() -> None:
    """A ``CreditsGranted`` stored at class_version 1 (before ``by``) reads as version 2."""
    user = uuid4()
    state = json.dumps(
        {
            "timestamp": {"_type_": "datetime_iso", "_data_": "2026-01-02T03:04:05+00:00"},
            "amount": 5,
            "reason": "old",
        }
    ).encode()
    topic = "ledger.account:Account.CreditsGranted"
    (n,) = decode([(7, user, 2, topic, state)], ledger_mapper())
    assert type(n.event) is Account.CreditsGranted
    assert (n.event.amount, n.event.reason, n.event.by, n.event.originator_id) == (5, "old", None, user)
    assert n.event.__dict__ == ledger_mapper().to_domain_event(StoredEvent(user, 2, topic, state)).__dict__


def test_an_effect_is_computed_once_per_event() -> None:
    now = datetime.now(UTC)
    account = Account.open(uuid4(), now)
    account.grant_credits(3, "test", now)
    event = account.pending_events[-1]
    n = Notified(1, event)
    assert n.effect is n.effect is effect(event)  # cached on the notification and the last event
    assert n.effect.movements[0].delta == 3
    other = Notified(2, event)
    assert other.effect == n.effect


def test_replay_workers_fork_only_a_process_of_one_thread() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert worker_context().get_start_method() == "spawn"
    finally:
        stop.set()
        thread.join()


def test_shared_decoding_decodes_each_event_once_and_keeps_the_newest(
    pg_url: str, pg_ledger: LedgerApplication
) -> None:
    random_history(pg_ledger, users=4, events=300, seed=8)
    with psycopg.connect(pg_url) as conn, conn.cursor(binary=True) as cur:
        rows = select_after(cur, 0, 10_000)
    shared = SharedDecoding(ledger_mapper(), keep=100)
    first = shared.decode(rows[:150])
    again = shared.decode(rows[50:150])  # what another runner reads
    assert all(x is y for x, y in zip(first[50:], again, strict=True))
    reference = decode(rows, Mapper[UUID](transcoder=json_transcoder()))
    assert [(n.position, n.event.__dict__) for n in first] == [
        (n.position, n.event.__dict__) for n in reference[:150]
    ]
    assert shared.decode(rows[:50])[0] is not first[0]  # the oldest were let go: decoded anew
    assert len(shared._events) <= 100
