"""``OrjsonTranscoder`` stores and reads exactly what eventsourcing's ``JSONTranscoder`` does:
the same bytes for every state, the same values (or the same errors) for every stored JSON, and
events stored by the ledger before it used it decode to the same events and encode again to the
same bytes."""

from __future__ import annotations

import enum
import json
import math
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import hypothesis.strategies as st
import pytest
from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent, Transcoder, Transcoding
from hypothesis import HealthCheck, given, settings

from ledger.account import Account
from ledger.application import event_mapper, event_transcoder
from ledger.transcoding import OrjsonTranscoder
from tests.ledger.transcoder_fixture import FIXTURE, ODD_USER, json_transcoder

ORJSON = event_transcoder()
JSON = json_transcoder()


def _outcome(make: Callable[[], Any]) -> tuple[str, Any]:
    """What ``make`` gives, as compared: the value's ``repr`` with its types (``True`` is not
    ``1``, ``1.0`` not ``1``, a UUID not its text; NaN equals NaN), or the class of its error."""
    try:
        value = make()
    except Exception as exc:  # noqa: BLE001 - the error is the outcome compared
        return "error", type(exc)
    return "value", _typed(value)


def _typed(value: Any) -> Any:
    if isinstance(value, dict):
        return (type(value), [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value), [_typed(v) for v in value])
    if isinstance(value, datetime):
        return (type(value), repr(value), value.utcoffset())
    return (type(value), repr(value))


def _same_encoding(obj: Any) -> None:
    expected = _outcome(lambda: JSON.encode(obj))
    assert _outcome(lambda: ORJSON.encode(obj)) == expected
    if expected[0] == "value":  # what was stored reads back the same
        data = JSON.encode(obj)
        assert _outcome(lambda: ORJSON.decode(data)) == _outcome(lambda: JSON.decode(data))


def _same_decoding(data: bytes) -> None:
    assert _outcome(lambda: ORJSON.decode(data)) == _outcome(lambda: JSON.decode(data))


# ------------------------------------------------------------------ encoding, value by value
class Color(enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    L = 3


class Kind(enum.StrEnum):
    IMAGE = "image"


class Text(str):
    pass


class Number(int):
    pass


class Unregistered:
    pass


def _circular() -> dict[str, Any]:
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    return d


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


NOW = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=UTC)
ENCODED: dict[str, Any] = {
    "event_like": {"timestamp": NOW, "job_id": uuid4(), "amount": 3, "reason": "x", "by": None},
    "nested": {"a": [{"b": [NOW, (uuid4(), Decimal("1.50"))]}, {}, [], (), None, True, False]},
    "datetimes": [
        NOW,
        NOW.replace(tzinfo=None),
        NOW.replace(microsecond=0),
        NOW.astimezone(timezone(timedelta(hours=9))),
        NOW.astimezone(timezone(timedelta(hours=-3, minutes=-30))),
        datetime(1, 1, 1),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
    "uuids": [uuid4(), UUID(int=0), UUID(int=2**128 - 1)],
    "decimals": [
        Decimal("0"),
        Decimal("-0"),
        Decimal("1E+3"),
        Decimal("NaN"),
        Decimal("-Infinity"),
        Decimal("1." + "0" * 40),
    ],
    "unicode": [
        "café ☕ 😀",
        "한국어",
        "\u2028\u2029",
        "\ufeff",
        "\x00\x01\x1f\x7f\x80\x9f",
        '"\\/',
        "\t\n\r\b\f",
    ],
    "all_bytes": "".join(chr(i) for i in range(512)),
    "lone_surrogate": {"a": "\ud800"},
    "lone_surrogate_key": {"\udfff": 1},
    "ints": [0, -0, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 2**200, -(2**200)],
    "floats": [0.0, -0.0, 1.5, 0.1, 1e-4, 9.99e-5, 1e-5, 5e-324, 1e16, 1e22, 1.7976931348623157e308, -2.5e-7],
    "nan": [math.nan],
    "infinities": {"a": math.inf, "b": -math.inf},
    "bools_and_none": [True, False, None],
    "non_str_keys": {1: "a", 2.5: "b", False: "c", None: "d"},
    "uuid_key": {uuid4(): 1},
    "tuple_key": {(1, 2): 3},
    "enums": [Color.RED],
    "int_enum": [Size.L],
    "str_enum": {"kind": Kind.IMAGE},
    "str_subclass": {"a": Text("text"), Text("key"): 1},
    "int_subclass": [Number(5)],
    "ordered_dict": OrderedDict([("b", 1), ("a", NOW)]),
    "set": {1, 2},
    "date": date(2026, 11, 2),
    "bytes": b"abc",
    "unregistered": Unregistered(),
    "circular": _circular(),
    "deep_254": _deep(254),
    "deep_300": _deep(300),
    "top_level_text": "text",
    "top_level_uuid": uuid4(),
    "transcoding_lookalike": {"_type_": "uuid_hex", "_data_": "not a uuid"},
    "empty": {},
}


@pytest.mark.parametrize("name", sorted(ENCODED))
def test_it_stores_what_json_transcoder_stores(name: str) -> None:
    """Byte for byte, or the same error."""
    _same_encoding(ENCODED[name])


def test_the_usual_values_are_written_by_orjson() -> None:
    """The fast path is taken (not JSONTranscoder inside) for the usual event state."""
    state = ENCODED["event_like"]

    class Failing(JSONTranscoder):
        def encode(self, obj: Any) -> bytes:
            raise AssertionError("left to JSONTranscoder")

        decode = encode  # type: ignore[assignment]

    transcoder = event_transcoder()
    transcoder._json = Failing()  # test seam: the fallback must not be reached
    assert transcoder.encode(state) == JSON.encode(state)
    assert transcoder.decode(JSON.encode(state)) == state


# ------------------------------------------------------------------ decoding, JSON by JSON
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
            "prices": [PRICE, {"p": PRICE}],
        }
    ).encode(),
    "not_quite_transcodings": json.dumps(
        {
            "three_keys": {"_type_": "uuid_hex", "_data_": JOB["_data_"], "more": 1},
            "type_only": {"_type_": "uuid_hex", "other": 1},
            "data_only": {"_data_": "x", "other": 1},
        }
    ).encode(),
    "data_not_text": json.dumps({"odd": {"_type_": "uuid_hex", "_data_": 5}}).encode(),
    "data_an_object": json.dumps({"odd": {"_type_": "datetime_iso", "_data_": {"inner": WHEN}}}).encode(),
    "data_a_transcoding": json.dumps({"odd": {"_type_": "uuid_hex", "_data_": WHEN}}).encode(),
    "type_an_object": json.dumps({"odd": {"_type_": {"a": 1}, "_data_": "x"}}).encode(),
    "unknown_type": json.dumps({"odd": {"_type_": "no_such_type", "_data_": "x"}}).encode(),
    "bad_uuid": json.dumps({"job_id": {"_type_": "uuid_hex", "_data_": "not-a-uuid"}}).encode(),
    "bad_datetime": json.dumps({"timestamp": {"_type_": "datetime_iso", "_data_": "yesterday"}}).encode(),
    "bad_decimal": json.dumps({"price": {"_type_": "decimal_str", "_data_": "twelve"}}).encode(),
    "uuid_forms": json.dumps(
        {
            "dashed": {"_type_": "uuid_hex", "_data_": "d6bc8be2-56f0-4951-aad8-75e9cf7ccf0a"},
            "upper": {"_type_": "uuid_hex", "_data_": "D6BC8BE256F04951AAD875E9CF7CCF0A"},
            "braces": {"_type_": "uuid_hex", "_data_": "{d6bc8be256f04951aad875e9cf7ccf0a}"},
            "urn": {"_type_": "uuid_hex", "_data_": "urn:uuid:d6bc8be2-56f0-4951-aad8-75e9cf7ccf0a"},
        }
    ).encode(),
    "datetime_forms": json.dumps(
        {
            "naive": {"_type_": "datetime_iso", "_data_": "2026-01-02T03:04:05"},
            "z": {"_type_": "datetime_iso", "_data_": "2026-01-02T03:04:05Z"},
            "offset": {"_type_": "datetime_iso", "_data_": "2026-01-02T03:04:05.5+09:00"},
            "date_only": {"_type_": "datetime_iso", "_data_": "2026-01-02"},
        }
    ).encode(),
    "floats": b'{"a": 1.5, "b": [0.1, 1e-7, -0.0], "c": {"d": 2.5e300}, "t": '
    + json.dumps(WHEN).encode()
    + b"}",
    "float_in_a_transcoding": json.dumps({"odd": {"_type_": "decimal_str", "_data_": 1.5}}).encode(),
    "big_ints": b'{"a": 123456789012345678901234567890, "b": [-9223372036854775809], '
    b'"c": 18446744073709551616}',
    "ints_at_the_edge": b'{"a": 9223372036854775807, "b": -9223372036854775808, '
    b'"c": 18446744073709551615, "d": -0}',
    "exponent_ints": b'{"a": 1e2, "b": 1E400, "c": -1e-400}',
    "non_finite": b'{"a": NaN, "b": Infinity, "c": -Infinity}',  # json reads them, orjson does not
    "lone_surrogate": b'{"a": "\\ud800", "b": "ok"}',
    "surrogate_pair": b'{"a": "\\ud83d\\ude00"}',
    "nul_and_unicode": json.dumps({"a": "bad\x00reason", "b": "\u00e9\U0001f600", "c": "\\u0000"}).encode(),
    "unescaped_unicode": '{"a": "caf\u00e9 \U0001f600", "\u2028": "\u2029"}'.encode(),
    "raw_control_character": b'{"a": "x\x01y"}',  # json (strict) and orjson refuse it
    "duplicate_keys": b'{"a": 1, "b": 2, "a": ' + json.dumps(JOB).encode() + b', "b": [3]}',
    "duplicate_transcoding_keys": b'{"t": {"_type_": "uuid_hex", "_data_": "x", "_data_": "'
    + JOB["_data_"].encode()
    + b'"}}',
    "whitespace": b' \n\t{ "a" : [ 1 , 2 ] }\r\n ',
    "top_level_transcoding": json.dumps(JOB).encode(),
    "top_level_list": json.dumps([WHEN, 1]).encode(),
    "top_level_string": b'"text"',
    "top_level_number": b"42",
    "top_level_float": b"4.5",
    "empty": b"{}",
    "empty_input": b"",
    "not_json": b'{"a": ',
    "trailing_garbage": b'{"a": 1} x',
    "bom": b'\xef\xbb\xbf{"a": 1}',
    "invalid_utf8": b'{"a": "\xff"}',
    "overlong_utf8": b'{"a": "\xc0\xaf"}',
    "utf8_surrogate": b'{"a": "\xed\xa0\x80"}',
    "deep": b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    "deep_but_allowed": b'{"a": ' + b"[" * 200 + b"]" * 200 + b"}",
}


@pytest.mark.parametrize("name", sorted(STATES))
def test_it_reads_what_json_transcoder_reads(name: str) -> None:
    """Transcodings at any depth, the float and big integer JSON orjson reads otherwise than
    json, what only one of them accepts, JSON that is no object, and broken JSON: the same
    value, or the same error."""
    _same_decoding(STATES[name])


def test_transcodings_are_converted_at_any_depth() -> None:
    value = ORJSON.decode(STATES["nested"])
    when, job, price = datetime.fromisoformat(WHEN["_data_"]), UUID(JOB["_data_"]), Decimal("12.50")
    assert value["timestamp"] == when and value["timestamp"].tzinfo is UTC
    assert value["request"] == {"at": when, "ids": [job, [job, {"deep": when}]], "empty": {}, "none": []}
    assert value["outputs"] == [{"job": job, "sizes": [1, 2]}, "text", 7, None]
    assert value["prices"] == [price, {"p": price}]
    big = ORJSON.decode(STATES["big_ints"])
    assert big["a"] == 123456789012345678901234567890 and type(big["c"]) is int  # not orjson's float


def test_a_transcoding_registered_later_is_used_both_ways() -> None:
    class DateAsISO(Transcoding):
        type = date
        name = "date_iso"

        def encode(self, obj: date) -> str:
            return obj.isoformat()

        def decode(self, data: str) -> date:
            return date.fromisoformat(data)

    ours, theirs = event_transcoder(), json_transcoder()
    for t in (ours, theirs):
        t.register(DateAsISO())
    state = {"day": date(2026, 11, 2), "days": [date(2026, 1, 1)]}
    assert (
        ours.encode(state)
        == theirs.encode(state)
        == (
            b'{"day":{"_type_":"date_iso","_data_":"2026-11-02"},"days":[{"_type_":"date_iso","_data_":"2026-01-01"}]}'
        )
    )
    assert ours.decode(ours.encode(state)) == state


# ------------------------------------------------------------------ generated states
_timezones = st.one_of(
    st.none(), st.just(UTC), st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-1439, 1439))
)
_texts = st.one_of(
    st.text(),
    st.text(st.characters(codec="utf-8")),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x7F)),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u2028", "_type_", "_data_"]),
)
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.floats(min_value=-1e-3, max_value=1e-3),
    _texts,
    st.uuids(),
    st.decimals(),
    st.datetimes(timezones=_timezones),
)
_keys = st.one_of(_texts, st.sampled_from(["_type_", "_data_"]))


def _transcoding_object(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A lookalike of a stored transcoding object: registered name or not, data of any kind."""
    names = st.sampled_from(["uuid_hex", "datetime_iso", "decimal_str", "other"])
    return st.builds(lambda n, d: {"_type_": n, "_data_": d}, names, children)


_states = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(_keys, children, max_size=4),
        _transcoding_object(children),
    ),
    max_leaves=24,
)
_event_states = st.dictionaries(_keys, _states, max_size=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_event_states)
def test_generated_states_are_stored_and_read_as_json_transcoder_does(state: dict[str, Any]) -> None:
    _same_encoding(state)


_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _texts),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(_keys, children, max_size=4),
        _transcoding_object(st.one_of(children, st.uuids().map(lambda u: u.hex))),
        st.builds(
            lambda d: {"_type_": "datetime_iso", "_data_": d.isoformat()}, st.datetimes(timezones=_timezones)
        ),
    ),
    max_leaves=24,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json_values, st.booleans(), st.sampled_from([(",", ":"), (", ", ": ")]))
def test_generated_json_is_read_as_json_transcoder_reads_it(
    value: Any, ascii_only: bool, separators: tuple[str, str]
) -> None:
    """JSON as anyone may have written it (escaped or not, spaced or not), transcoding objects
    with good and bad data included."""
    try:
        text = json.dumps(value, ensure_ascii=ascii_only, separators=separators)
        data = text.encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        data = json.dumps(value, ensure_ascii=True).encode()
    _same_decoding(data)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_finite_float_is_written_as_json_writes_it(f: float) -> None:
    assert ORJSON.encode({"f": f}) == JSON.encode({"f": f})


# ------------------------------------------------------------------ the stored fixture
def _fixture() -> list[tuple[str, StoredEvent]]:
    rows = []
    for line in FIXTURE.read_text(encoding="utf-8").split("\n"):  # not splitlines(): U+2028 is text
        if not line:
            continue
        r = json.loads(line)
        stored = StoredEvent(
            UUID(r["originator_id"]), r["originator_version"], r["topic"], r["state"].encode()
        )
        rows.append((r["kind"], stored))
    return rows


def test_the_fixture_was_written_by_json_transcoder() -> None:
    rows = _fixture()
    assert len(rows) > 200 and {kind for kind, _ in rows} == {"event", "snapshot"}
    topics = {s.topic for _, s in rows}
    assert len(topics) >= 10
    for _, stored in rows:  # encoded again by JSONTranscoder: the same bytes
        assert JSON.encode(JSON.decode(stored.state)) == stored.state


def test_events_stored_before_decode_to_the_same_events_and_encode_to_the_same_bytes() -> None:
    """A stream written by the ledger with eventsourcing's own JSONTranscoder: the ledger's
    mapper makes the same events of it, and its transcoder writes each state read back as the
    same bytes (an event of a class since upgraded is written as its new version: the state,
    not the event, is what round-trips)."""
    ours, theirs = event_mapper(), Mapper[UUID](transcoder=json_transcoder())
    rows = _fixture()
    for _, stored in rows:
        mine, reference = ours.to_domain_event(stored), theirs.to_domain_event(stored)
        assert type(mine) is type(reference)
        assert _typed(mine.__dict__) == _typed(reference.__dict__)
        assert ours.transcoder.encode(ours.transcoder.decode(stored.state)) == stored.state  # byte for byte
    odd = [s for kind, s in rows if kind == "event" and s.originator_id == ODD_USER]
    state = ORJSON.decode(next(s.state for s in odd if s.topic.endswith("JobRequested")))
    assert state["request"]["options"]["seed"] == 2**70 and state["request"]["options"]["tiny"] == 1e-05


def test_accounts_replayed_from_the_fixture_are_the_same() -> None:
    ours, theirs = event_mapper(), Mapper[UUID](transcoder=json_transcoder())
    events = [s for kind, s in _fixture() if kind == "event"]
    users = {s.originator_id for s in events}
    for user in users:
        stream = [s for s in events if s.originator_id == user]
        mine: Account | None = None
        reference: Account | None = None
        for stored in stream:
            mine = ours.to_domain_event(stored).mutate(mine)  # type: ignore[attr-defined]
            reference = theirs.to_domain_event(stored).mutate(reference)  # type: ignore[attr-defined]
        assert mine is not None and reference is not None
        assert _typed(vars(mine)) == _typed(vars(reference))
        assert mine.version == len(stream)


def test_it_is_a_public_transcoder() -> None:
    assert isinstance(ORJSON, OrjsonTranscoder) and isinstance(ORJSON, Transcoder)
