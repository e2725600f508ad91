"""The log's fast decoder makes the events eventsourcing's mapper makes: same classes, same
state, the same upcasting of old versions; an effect is computed once per event."""

from __future__ import annotations

import json
import pickle
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    UUIDAsHex,
)

from ledger.account import Account
from ledger.application import LedgerApplication
from ledger.effects import effect
from projections.events import (
    EVENTS_TABLE,
    Decoder,
    Notified,
    decode,
    ledger_mapper,
    select_after,
    uuid_of,
    worker_context,
)
from tests.projections.history import random_history


def test_the_decoder_makes_what_the_mapper_makes(pg_url: str, pg_ledger: LedgerApplication) -> None:
    random_history(pg_ledger, users=6, events=400, seed=3)
    mapper = ledger_mapper()
    with psycopg.connect(pg_url) as conn, conn.cursor() as cur:
        rows = select_after(cur, 0, 10_000)
        topics = {r[0] for r in conn.execute(f"SELECT DISTINCT topic FROM {EVENTS_TABLE}")}
    assert len(rows) >= 400 and len(topics) >= 8
    fast = decode(rows, mapper)
    slow = [mapper.to_domain_event(StoredEvent(r[1], r[2], r[3], bytes(r[4]))) for r in rows]
    assert [n.position for n in fast] == [r[0] for r in rows]
    assert [type(n.event) for n in fast] == [type(e) for e in slow]
    assert [n.event.__dict__ for n in fast] == [e.__dict__ for e in slow]


def test_the_decoder_upcasts_an_old_version() -> None:
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


# ------------------------------------------------------------------ the decoder, state by state
TOPIC = "ledger.account:Account.JobRequested"  # class_version 1: the state is taken as it is
WHEN = {"_type_": "datetime_iso", "_data_": "2026-01-02T03:04:05.123456+00:00"}
JOB = {"_type_": "uuid_hex", "_data_": "d6bc8be256f04951aad875e9cf7ccf0a"}
PRICE = {"_type_": "decimal_str", "_data_": "12.50"}

STATES: dict[str, bytes] = {
    "flat": json.dumps(
        {"timestamp": WHEN, "job_id": JOB, "kind": "image", "n": 3, "ok": True, "x": None}
    ).encode(),
    "nested": json.dumps(
        {
            "timestamp": WHEN,
            "request": {"at": WHEN, "ids": [JOB, [JOB, {"deep": WHEN}]], "empty": {}, "none": []},
            "outputs": [{"job": JOB, "sizes": [1, 2]}, "text", 7, None],
        }
    ).encode(),
    "not_quite_transcodings": json.dumps(
        {
            "three_keys": {"_type_": "uuid_hex", "_data_": JOB["_data_"], "more": 1},
            "type_only": {"_type_": "uuid_hex", "other": 1},
            "data_only": {"_data_": "x", "other": 1},
            "data_not_text": {"_type_": "uuid_hex", "_data_": 5},  # the transcoder's own error
        }
    ).encode(),
    "data_an_object": json.dumps({"odd": {"_type_": "datetime_iso", "_data_": {"inner": WHEN}}}).encode(),
    "type_an_object": json.dumps({"odd": {"_type_": {"a": 1}, "_data_": "x"}}).encode(),
    "unknown_type": json.dumps({"odd": {"_type_": "no_such_type", "_data_": "x"}}).encode(),
    "bad_uuid": json.dumps({"job_id": {"_type_": "uuid_hex", "_data_": "not-a-uuid"}}).encode(),
    "bad_datetime": json.dumps({"timestamp": {"_type_": "datetime_iso", "_data_": "yesterday"}}).encode(),
    "uuid_forms": json.dumps(
        {
            "dashed": {"_type_": "uuid_hex", "_data_": "d6bc8be2-56f0-4951-aad8-75e9cf7ccf0a"},
            "upper": {"_type_": "uuid_hex", "_data_": "D6BC8BE256F04951AAD875E9CF7CCF0A"},
            "braces": {"_type_": "uuid_hex", "_data_": "{d6bc8be256f04951aad875e9cf7ccf0a}"},
            "urn": {"_type_": "uuid_hex", "_data_": "urn:uuid:d6bc8be2-56f0-4951-aad8-75e9cf7ccf0a"},
        }
    ).encode(),
    "floats": b'{"a": 1.5, "b": [0.1, 1e-7, -0.0], "c": {"d": 2.5e300}, "t": '
    + json.dumps(WHEN).encode()
    + b"}",
    "big_ints": b'{"a": 123456789012345678901234567890, "b": [-9223372036854775809], '
    b'"c": 18446744073709551616}',
    "ints_at_the_edge": b'{"a": 9223372036854775807, "b": -9223372036854775808, '
    b'"c": 18446744073709551615, "d": -0}',
    "non_finite": b'{"a": NaN, "b": Infinity, "c": -Infinity}',  # json reads them, orjson does not
    "lone_surrogate": b'{"a": "\\ud800", "b": "ok"}',
    "nul_and_unicode": json.dumps({"a": "bad\x00reason", "b": "\u00e9\U0001f600", "c": "\\u0000"}).encode(),
    "unescaped_unicode": '{"a": "caf\u00e9 \U0001f600"}'.encode(),
    "duplicate_keys": b'{"a": 1, "b": 2, "a": ' + json.dumps(JOB).encode() + b', "b": [3]}',
    "top_level_transcoding": json.dumps(JOB).encode(),
    "top_level_list": json.dumps([WHEN, 1]).encode(),
    "top_level_string": b'"text"',
    "empty": b"{}",
    "not_json": b'{"a": ',
    "trailing_garbage": b'{"a": 1} x',
    "bom": b'\xef\xbb\xbf{"a": 1}',
    "invalid_utf8": b'{"a": "\xff"}',
    "deep": b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}",
}


def _outcome(make: Callable[[], Any]) -> tuple[str, Any]:
    """What ``make`` gives: the event's class and state, or the class of its error."""
    try:
        event = make()
    except Exception as exc:  # noqa: BLE001 - the error is the outcome compared
        return "error", type(exc)
    return type(event).__name__, event.__dict__


@pytest.mark.parametrize("mapper", ["ledger", "with_decimals"])
@pytest.mark.parametrize("name", sorted(STATES))
def test_the_decoder_makes_what_the_mapper_makes_of_any_state(name: str, mapper: str) -> None:
    """Transcodings at any depth, the float and big integer JSON orjson reads otherwise than
    json, what only one of them accepts, JSON that is no object, and broken JSON: the same
    event, or an error where the mapper raises one."""
    m = ledger_mapper() if mapper == "ledger" else _mapper_with_decimals()
    user, state = uuid4(), STATES[name]
    fast = _outcome(lambda: Decoder(m).event(user, 4, TOPIC, state))
    slow = _outcome(lambda: m.to_domain_event(StoredEvent(user, 4, TOPIC, state)))
    assert fast == slow
    if fast[0] == "error":  # JSON that is no object: the mapper's TypeError, as it sets the id
        assert slow[1] is (TypeError if name.startswith("top_level") else MapperDeserialisationError)


def test_the_decoder_converts_transcodings_at_any_depth() -> None:
    (n,) = decode([(1, uuid4(), 4, TOPIC, STATES["nested"])], ledger_mapper())
    when, job = datetime.fromisoformat(WHEN["_data_"]), UUID(JOB["_data_"])
    assert n.event.timestamp == when and n.event.timestamp.tzinfo is UTC
    assert n.event.request == {"at": when, "ids": [job, [job, {"deep": when}]], "empty": {}, "none": []}
    assert n.event.outputs == [{"job": job, "sizes": [1, 2]}, "text", 7, None]
    (n,) = decode([(2, uuid4(), 4, TOPIC, STATES["big_ints"])], ledger_mapper())
    assert n.event.a == 123456789012345678901234567890 and type(n.event.c) is int  # not orjson's float


def test_a_transcoding_without_a_fast_path_is_the_transcoders() -> None:
    state = json.dumps({"price": PRICE, "prices": [PRICE, {"p": PRICE}]}).encode()
    (n,) = decode([(1, uuid4(), 4, TOPIC, state)], _mapper_with_decimals())
    assert n.event.price == Decimal("12.50") and n.event.prices == [Decimal("12.50"), {"p": Decimal("12.50")}]


@pytest.mark.parametrize(
    "text",
    [
        "d6bc8be256f04951aad875e9cf7ccf0a",
        "d6bc8be2-56f0-4951-aad8-75e9cf7ccf0a",
        "D6BC8BE2-56F0-4951-AAD8-75E9CF7CCF0A",
        "{d6bc8be2-56f0-4951-aad8-75e9cf7ccf0a}",
        "urn:uuid:d6bc8be2-56f0-4951-aad8-75e9cf7ccf0a",
        "uuid:d6bc8be256f04951aad875e9cf7ccf0a",
        "d6bc8be2-56f0-4951-aad8-75e9cf7ccf0",  # too short
        "d6bc8be256f04951aad875e9cf7ccf0a0",  # too long
        "g6bc8be256f04951aad875e9cf7ccf0a",  # not hex
        " 6bc8be256f04951aad875e9cf7ccf0a",  # int() reads these three: so does UUID()
        "+6bc8be256f04951aad875e9cf7ccf0a",
        "d6bc8be2_6f04951aad875e9cf7ccf0a",
        "0xbc8be256f04951aad875e9cf7ccf0a",
        "00000000000000000000000000000000",
        "ffffffffffffffffffffffffffffffff",
        "",
    ],
)
def test_uuid_of_is_uuid(text: str) -> None:
    try:
        v = UUID(text)
    except ValueError:
        with pytest.raises(ValueError):
            uuid_of(text)
        return
    u = uuid_of(text)
    assert type(u) is UUID
    assert (u, u.int, u.is_safe, hash(u), str(u), repr(u)) == (v, v.int, v.is_safe, hash(v), str(v), repr(v))
    assert pickle.loads(pickle.dumps(u)) == v


def test_replay_workers_fork_only_a_process_of_one_thread() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert worker_context().get_start_method() == "spawn"
    finally:
        stop.set()
        thread.join()


def _mapper_with_decimals() -> Mapper[Any]:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DatetimeAsISO(), DecimalAsStr()):
        transcoder.register(transcoding)
    return Mapper(transcoder=transcoder)
