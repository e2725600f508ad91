"""A real SMTP server for the tests (aiosmtpd on a free localhost port) and what it received.

Import the fixtures into a test module (``from tests.mail_fixtures import smtp_server``) and
point ``VTO_SMTP_URL`` at ``smtp_server.url``. The server stores a message before it answers
the client's DATA command, and the API delivers mail in a background task that TestClient
waits for: a message is in the inbox when the request's response is back."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

LINK = re.compile(r"https?://\S+[?&]token=([A-Za-z0-9_-]+)")


@dataclass
class Inbox:
    """Messages the test SMTP server accepted, in order."""

    url: str
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        return [message for message in self.messages if message["To"] == address]

    def token(self, address: str) -> str:
        """The link token of the last message to ``address``."""
        messages = self.to(address)
        assert messages, f"no mail to {address}; got {[m['To'] for m in self.messages]}"
        return link_token(messages[-1])


def link_token(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    found = LINK.search(body.get_content())
    assert found is not None, body.get_content()
    return found.group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _serve(**options: Any) -> Iterator[Inbox]:
    port = free_port()
    inbox = Inbox(url=f"smtp://127.0.0.1:{port}")
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[Inbox]:
    """An SMTP server on 127.0.0.1 for one test (no TLS, no auth; it offers SMTPUTF8)."""
    yield from _serve()


@pytest.fixture
def ascii_smtp_server() -> Iterator[Inbox]:
    """The same without SMTPUTF8 (RFC 6531): it cannot take an address whose local part is not
    ASCII."""
    yield from _serve(enable_SMTPUTF8=False)
