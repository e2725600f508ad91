"""Signing secrets and signatures (Standard Webhooks, symmetric scheme ``v1``).

A secret is 32 random bytes, shown as ``whsec_`` + base64. A signature is
``v1,`` + base64(HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}")); during a
rotation every secret still valid signs, and the ``webhook-signature`` header holds their
signatures separated by spaces. Written here rather than taken from the reference package
(``standardwebhooks``): it is three lines of the standard library, and the tests verify them
with that package, which an implementation shared with it could not show."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

PREFIX = "whsec_"
SECRET_BYTES = 32  # the specification asks for 24 to 64


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def show(secret: bytes) -> str:
    """``whsec_`` + base64, as the receiver's verifier takes it."""
    return PREFIX + base64.b64encode(secret).decode("ascii")


def signature(secret: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(keys: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one signature per secret still valid, newest first."""
    return " ".join(signature(key, webhook_id, timestamp, body) for key in keys)
