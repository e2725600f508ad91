"""One job followed across the processes: the request id of the HTTP request that ordered it
and a W3C trace context (``traceparent``, ``tracestate``).

The API takes the client's ``traceparent`` (or starts a trace) and its request id
(``command_api.ops.middleware``) and records both with the job request in the ledger
(``request["trace"]``, ``to_dict``); the relay reads them back with the job and sends them as
record headers (``headers``: ``x-request-id``, ``traceparent``, ``tracestate``); the worker
reads them from the request (``from_message``) and sends them on with its result, progress
and dead-letter messages to the ingestor and the progress recorder. Every process writes
``request_id=... trace_id=...`` (``str(context)``) in its log lines about the job, so one
``grep`` of a trace id follows the job from the API's access log to its ledger outcome.
Record headers need Kafka 0.11 or later: on an older broker the trace stops at the relay's
log (docs/kafka.md).

No tracing SDK runs here; each hop that sends a message takes a span id of its own, a child
of the one it received (``child``), so a collector added later sees a well-formed trace.
Parsing is OpenTelemetry's (``TraceContextTextMapPropagator``: the format's rules, versions
and invalid ids): a header that is not a valid trace context is ignored and a new trace
starts. Writing version 00's fixed layout is one format string. Everything read from a
message or a stored request is validated again; a request id is kept only when it is a short
token (it goes into log lines)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from infra.queue.base import Message

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
REQUEST_ID = "x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PROPAGATOR = TraceContextTextMapPropagator()


def valid_request_id(value: object) -> str | None:
    """``value`` when it is a request id as the API gives them (a short token), else None."""
    return value if isinstance(value, str) and _REQUEST_ID.fullmatch(value) else None


def _random_id(bits: int) -> int:
    while True:  # an all-zero id is invalid
        value = secrets.randbits(bits)
        if value:
            return value


@dataclass(frozen=True)
class TraceContext:
    trace_id: int
    span_id: int
    sampled: bool = True
    trace_state: str | None = None  # the ``tracestate`` header, passed on as received
    request_id: str | None = None

    @classmethod
    def new(cls, request_id: str | None = None) -> TraceContext:
        """A new trace (nothing upstream gave one)."""
        return cls(_random_id(128), _random_id(64), request_id=valid_request_id(request_id))

    @classmethod
    def parse(
        cls, traceparent: str | None, tracestate: str | None = None, request_id: str | None = None
    ) -> TraceContext | None:
        """The context a ``traceparent`` header names, or None when it is not a valid one."""
        if not traceparent:
            return None
        carrier = {TRACEPARENT: traceparent}
        if tracestate:
            carrier[TRACESTATE] = tracestate
        span = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
        if not span.is_valid:
            return None
        state = span.trace_state.to_header() if span.trace_state else None
        return cls(
            span.trace_id,
            span.span_id,
            sampled=span.trace_flags.sampled,
            trace_state=state or None,
            request_id=valid_request_id(request_id),
        )

    @classmethod
    def continued(
        cls, traceparent: str | None, tracestate: str | None = None, request_id: str | None = None
    ) -> TraceContext:
        """A span of this process in the trace the caller sent, or in a new one."""
        parent = cls.parse(traceparent, tracestate, request_id)
        return cls.new(request_id) if parent is None else parent.child()

    @classmethod
    def from_message(cls, message: Message) -> TraceContext | None:
        """The context a message's record headers carry (None when they carry none)."""
        return cls.parse(message.header(TRACEPARENT), message.header(TRACESTATE), message.header(REQUEST_ID))

    @classmethod
    def from_dict(cls, value: Any) -> TraceContext | None:
        """The context stored with a job request (``to_dict``), or None."""
        if not isinstance(value, Mapping):
            return None
        traceparent, tracestate = value.get(TRACEPARENT), value.get(TRACESTATE)
        return cls.parse(
            traceparent if isinstance(traceparent, str) else None,
            tracestate if isinstance(tracestate, str) else None,
            value.get("request_id"),
        )

    def child(self) -> TraceContext:
        """The same trace, a new span id (the next hop's)."""
        return replace(self, span_id=_random_id(64))

    @property
    def trace_id_hex(self) -> str:
        return trace.format_trace_id(self.trace_id)

    @property
    def traceparent(self) -> str:
        """The W3C header (version 00) of this span: a fixed layout, written directly."""
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{'01' if self.sampled else '00'}"

    def headers(self) -> dict[str, str]:
        """The record headers that carry this context."""
        headers = {TRACEPARENT: self.traceparent}
        if self.trace_state:
            headers[TRACESTATE] = self.trace_state
        if self.request_id is not None:
            headers[REQUEST_ID] = self.request_id
        return headers

    def to_dict(self) -> dict[str, str]:
        """What the job request stores (``from_dict`` reads it back)."""
        stored = {TRACEPARENT: self.traceparent}
        if self.trace_state:
            stored[TRACESTATE] = self.trace_state
        if self.request_id is not None:
            stored["request_id"] = self.request_id
        return stored

    def __str__(self) -> str:
        return f"request_id={self.request_id or '-'} trace_id={self.trace_id_hex}"


def describe(context: TraceContext | None) -> str:
    """``request_id=... trace_id=...`` for a log line, or ``trace=none``."""
    return "trace=none" if context is None else str(context)
