"""The ledger's transcoder: eventsourcing's JSON format, read and written with ``orjson``.

``OrjsonTranscoder`` is a ``Transcoder`` (eventsourcing's public extension point for how event
state becomes bytes) that stores exactly what ``JSONTranscoder`` stores, byte for byte: compact
JSON (``","`` and ``":"``, no spaces), text as UTF-8 rather than escaped, and each value of a
registered type as ``{"_type_": <transcoding name>, "_data_": <what it encodes to>}``; and that
reads back exactly what ``JSONTranscoder`` reads (the same values, the same errors). Events
stored by either are read by both.

Encoding: the state is copied with each registered value replaced by its transcoding object
(``_prepared``), and the copy written by ``orjson``. Decoding: ``orjson`` reads the JSON, and
the transcoding objects in it are converted afterwards (``_converted``), innermost first, as
``JSONTranscoder``'s ``object_hook`` converts them while ``json`` reads.

Where the two libraries differ, the value is left to ``JSONTranscoder`` (kept inside, with the
same transcodings), which gives its own answer or error:

- a float that ``orjson`` writes otherwise than ``repr`` (non-zero and under 1e-4 in size: 1e-05
  is ``0.00001`` there) or not at all (NaN, infinities, which ``json`` writes as ``NaN``,
  ``Infinity``); and, read back, any JSON number ``orjson`` reads as a float (an integer too
  large for 64 bits is one of them, which ``json`` reads exactly) or refuses (``NaN``);
- an integer beyond 64 bits, text with a lone surrogate, a key that is not text, a subclass of
  a JSON type (an enum, a ``str`` subclass: ``json`` writes them its own way), a type with no
  transcoding, nesting deeper than ``orjson`` goes: whatever ``orjson`` or the copy refuses;
- JSON ``orjson`` refuses to read (a byte order mark, invalid UTF-8, an escaped lone
  surrogate, nesting too deep, broken JSON) or a transcoding's ``decode`` that fails.

The tests compare both transcoders on hand-written and generated states.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder, Transcoder, Transcoding

_SMALLEST = 1e-4  # below this (and above 0), orjson writes a float otherwise than repr()
_INF = math.inf


class _Unusual(Exception):
    """A value this module leaves to ``JSONTranscoder``."""


class OrjsonTranscoder(Transcoder):
    """``JSONTranscoder``'s stored format, read and written by ``orjson`` (module text)."""

    def __init__(self) -> None:
        self._json = JSONTranscoder()  # for what orjson reads or writes otherwise
        self._by_type: dict[type, Transcoding] = {}
        self._by_name: dict[str, Callable[[Any], Any]] = {}

    def register(self, transcoding: Transcoding) -> None:
        """Register ``transcoding`` (as ``JSONTranscoder.register`` does)."""
        self._json.register(transcoding)
        self._by_type[transcoding.type] = transcoding
        self._by_name[transcoding.name] = transcoding.decode

    # ------------------------------------------------------------------------- encode
    def encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(self._prepared(obj))
        except Exception:  # noqa: BLE001 - JSONTranscoder gives its own answer, or error
            return self._json.encode(obj)

    def _prepared(self, o: Any) -> Any:
        """``o`` as ``orjson`` writes it in ``JSONTranscoder``'s format: JSON values as they are
        (dicts and lists copied), a registered type's value as its transcoding object; raises
        for anything ``orjson`` would write otherwise (module text)."""
        t = type(o)
        if t is str or t is int or t is bool or o is None:
            return o
        if t is dict:
            prepared: dict[str, Any] = {}
            for key, value in o.items():
                if type(key) is not str:
                    raise _Unusual
                prepared[key] = self._prepared(value)
            return prepared
        if t is list or t is tuple:
            return [self._prepared(value) for value in o]
        if t is float:
            if _SMALLEST <= abs(o) < _INF or o == 0.0:
                return o
            raise _Unusual
        transcoding = self._by_type.get(t)
        if transcoding is None:
            raise _Unusual
        return {"_type_": transcoding.name, "_data_": self._prepared(transcoding.encode(o))}

    # ------------------------------------------------------------------------- decode
    def decode(self, data: bytes) -> Any:
        try:
            return self._converted(orjson.loads(data))
        except Exception:  # noqa: BLE001 - JSONTranscoder gives its own answer, or error
            return self._json.decode(data)

    def _converted(self, value: Any) -> Any:
        """A value ``orjson`` read, its transcoding objects converted in place, innermost first
        (as ``JSONTranscoder``'s ``object_hook``); raises on a float (module text)."""
        t = type(value)
        if t is dict:
            by_name = self._by_name
            for key, item in value.items():  # values replaced in place: the keys stay
                it = type(item)
                if it is dict:
                    if len(item) == 2 and type(item.get("_data_")) is str and "_type_" in item:
                        # a transcoding object with nothing inside (the usual): converted here
                        value[key] = by_name[item["_type_"]](item["_data_"])
                    else:
                        value[key] = self._converted(item)
                elif it is list:
                    value[key] = self._converted(item)
                elif it is float:
                    raise _Unusual
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                # not registered (KeyError) or unhashable (TypeError): JSONTranscoder's error
                return by_name[value["_type_"]](value["_data_"])
            return value
        if t is list:
            for i, item in enumerate(value):
                it = type(item)
                if it is dict or it is list:
                    value[i] = self._converted(item)
                elif it is float:
                    raise _Unusual
            return value
        if t is float:
            raise _Unusual
        return value
