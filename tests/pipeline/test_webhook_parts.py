"""The webhook dispatcher's pure parts: the address policy, signatures (checked with the
reference implementation), Retry-After, the fair choice of messages, ids and bodies."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from standardwebhooks import Webhook

from pipeline.webhooks import signing
from pipeline.webhooks.events import EventType, body, events_filter, message_id, requested_webhook, webhook_id
from pipeline.webhooks.sender import choose, retry_after
from pipeline.webhooks.store import Candidate
from pipeline.webhooks.targets import TargetNotAllowed, TargetPolicy, parse, refusal


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),  # shared address space (carrier-grade NAT)
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("0.0.0.0", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("240.0.0.1", "private"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fd00::1", "unique-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback address (inside an IPv6 address)"),
        ("::ffff:169.254.169.254", "link-local address (inside"),
        ("64:ff9b::a00:1", "private address (inside"),  # NAT64 of 10.0.0.1
        ("2002:c0a8:101::", "private address (inside"),  # 6to4 of 192.168.1.1
    ],
)
def test_private_addresses_are_refused(address: str, reason: str) -> None:
    found = refusal(ipaddress.ip_address(address))
    assert found is not None and reason in found


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "gopher://example.com",
        "http:///nohost",
        "https://u:p@example.com/",
        "not a url",
        "//x",
    ],
)
def test_only_http_urls_with_a_host_and_no_credentials(url: str) -> None:
    with pytest.raises(TargetNotAllowed):
        parse(url)


def test_a_name_is_refused_when_any_of_its_addresses_is_private() -> None:
    policy = TargetPolicy(False, lambda host, port: ["93.184.215.14", "10.0.0.7"])
    with pytest.raises(TargetNotAllowed, match=r"example.org: it does not resolve to public addresses only"):
        policy.check("https://example.org/hooks")
    TargetPolicy(False, lambda host, port: ["93.184.215.14"]).check("https://example.org/hooks")


def test_allowing_private_networks_resolves_nothing() -> None:
    def unreachable(host: str, port: int) -> list[str]:
        raise AssertionError("no resolution when private networks are allowed")

    TargetPolicy(True, unreachable).check("http://localhost:9000/hooks")
    with pytest.raises(TargetNotAllowed):
        TargetPolicy(True, unreachable).check("ftp://localhost/")


def test_signatures_verify_with_the_reference_implementation() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    assert len(old) == signing.SECRET_BYTES
    ident, timestamp = "msg_0123", int(datetime.now(UTC).timestamp())
    payload = body("job.completed", datetime.now(UTC), {"id": "x", "note": "caf\u00e9"}).encode()
    header = signing.signature_header([new, old], ident, timestamp, payload)
    headers = {"webhook-id": ident, "webhook-timestamp": str(timestamp), "webhook-signature": header}
    for key in (new, old):
        reference = Webhook(signing.show(key))
        assert reference.verify(payload, headers)["data"]["note"] == "caf\u00e9"
        assert reference.sign(ident, datetime.fromtimestamp(timestamp, UTC), payload) in header.split(" ")


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert retry_after("120", now) == 120.0
    assert retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0.0
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None
    assert retry_after("-5", now) is None


def test_accounts_take_turns_within_their_limit() -> None:
    busy, quiet, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    candidates = [Candidate(uuid.uuid4(), busy) for _ in range(10)]
    candidates += [Candidate(uuid.uuid4(), quiet), Candidate(uuid.uuid4(), third)]
    chosen = choose(candidates, {third: 2}, per_account=2, free=5)
    assert [c.user_id for c in chosen] == [busy, quiet, busy]  # third is at its limit
    assert len(choose(candidates, {}, per_account=4, free=3)) == 3


def test_message_ids_are_stable_and_the_body_minified() -> None:
    job = uuid.uuid4()
    first = message_id(job, EventType.COMPLETED, "succeeded")
    assert first == message_id(job, EventType.COMPLETED, "succeeded")
    assert first != message_id(job, EventType.COMPLETED, "failed")
    assert webhook_id(first) == f"msg_{first.hex}"
    at = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)
    assert (
        body("job.started", at, {"a": 1})
        == '{"type":"job.started","timestamp":"2026-11-26T12:00:00.123456Z","data":{"a":1}}'
    )


def test_the_filter_as_the_ledger_records_it() -> None:
    assert events_filter(None) == ["completed", "progress", "start"]
    assert events_filter(["start", "start"]) == ["start"]
    assert requested_webhook(
        {"webhook": "https://x.example/", "webhook_events_filter": ["progress", "bogus"]}
    ) == (
        "https://x.example/",
        ["progress"],
    )
    assert requested_webhook({"project_id": "p"}) is None
