"""The trace context of a job (``infra.tracing``): W3C ``traceparent`` parsed and written by
OpenTelemetry's propagator, continued or started, carried in record headers and in the job
request, and everything read back validated again (it comes from clients and messages)."""

from __future__ import annotations

import pytest

from infra.queue.base import Message
from infra.tracing import TraceContext, describe, valid_request_id

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_continued_in_a_span_of_our_own() -> None:
    context = TraceContext.continued(PARENT, "vendor=abc", "req-1")
    assert context.trace_id_hex == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert context.traceparent.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert context.traceparent != PARENT  # a new span id
    assert context.traceparent.endswith("-01")
    assert context.headers() == {
        "traceparent": context.traceparent,
        "tracestate": "vendor=abc",
        "x-request-id": "req-1",
    }
    assert str(context) == "request_id=req-1 trace_id=4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # a forbidden version
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        PARENT + "\nforged log line",
    ],
)
def test_anything_else_starts_a_new_trace(header: str | None) -> None:
    assert TraceContext.parse(header) is None
    context = TraceContext.continued(header, None, "req-2")
    assert context.trace_id != 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert TraceContext.parse(context.traceparent, None, "req-2") == context  # written, read back


@pytest.mark.parametrize("value", ["", "a b", "x" * 65, "line\nbreak", None, 7, "é"])
def test_a_request_id_is_kept_only_when_it_is_a_short_token(value: object) -> None:
    assert valid_request_id(value) is None
    assert TraceContext.new(value).request_id is None  # type: ignore[arg-type]
    assert valid_request_id("req-1.A_b") == "req-1.A_b"


def test_the_job_request_keeps_it_and_gives_it_back() -> None:
    context = TraceContext.continued(PARENT, None, "req-3")
    stored = context.to_dict()
    assert stored == {"traceparent": context.traceparent, "request_id": "req-3"}
    assert TraceContext.from_dict(stored) == context
    for broken in (None, "text", [], {"traceparent": 5}, {"traceparent": "x", "request_id": "a"}):
        assert TraceContext.from_dict(broken) is None


def test_a_message_gives_its_headers_back_and_survives_bad_ones() -> None:
    context = TraceContext.new("req-4")
    headers = tuple((k, v.encode()) for k, v in context.headers().items())
    message = Message("t", 0, 0, "k", b"{}", headers)
    assert TraceContext.from_message(message) == context
    assert TraceContext.from_message(Message("t", 0, 0, "k", b"{}")) is None
    bad = Message("t", 0, 0, "k", b"{}", (("traceparent", b"\xff\xfe"), ("x-request-id", b"ok")))
    assert TraceContext.from_message(bad) is None
    forged = Message("t", 0, 0, "k", b"{}", (*headers[:1], ("x-request-id", b"a\nb")))
    parsed = TraceContext.from_message(forged)
    assert parsed is not None and parsed.request_id is None
    assert describe(None) == "trace=none"
