"""Outgoing mail: verification and password-reset links.

``VTO_SMTP_URL`` set: each message goes through that SMTP server (``aiosmtplib``). Unset (the
embedded mode): each message is written as an ``.eml`` file under ``<data dir>/mail/`` and its
link is logged, so everything works offline.

SMTP URL forms (user and password optional, percent-encoded):

- ``smtp://user:pass@host:587`` — plain SMTP; STARTTLS when the server offers it (port 25 by
  default)
- ``smtp://host:587?starttls=required`` — STARTTLS or nothing (``?starttls=off``: never)
- ``smtps://user:pass@host:465`` — TLS from the first byte (port 465 by default)

Addresses: an address whose local part is ASCII goes out in ASCII, its domain in IDNA form
(``bob@xn--bcher-kva.de`` for ``bob@bücher.de``); one whose local part is not ASCII needs a
server that offers SMTPUTF8 (RFC 6531) and goes out as it is, its domain included (a server
without SMTPUTF8 refuses it: a delivery failure like any other).

Delivery never raises for mail trouble: a refused, unreachable or timed-out server (or an
unwritable mail directory) is logged and counted through ``on_failure``. Callers send only
after the transaction that caused the message has committed (FastAPI background tasks, which
run after the response).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
from email_validator import EmailNotValidError, validate_email

from infra.settings import Settings

log = logging.getLogger(__name__)

_STARTTLS = {"": None, "auto": None, "required": True, "on": True, "true": True, "off": False, "false": False}


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to deliver: parsed from ``VTO_SMTP_URL``."""

    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool  # smtps: TLS from the first byte
    start_tls: bool | None  # None: when the server offers it


def parse_smtp_url(url: str) -> SmtpServer:
    """``smtp://`` or ``smtps://``, see the module docstring; ``ValueError`` otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("VTO_SMTP_URL must look like smtp://[user:pass@]host[:port] or smtps://...")
    use_tls = parts.scheme == "smtps"
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(query) - {"starttls"}
    if unknown:
        raise ValueError(f"VTO_SMTP_URL: unknown option(s) {sorted(unknown)}; only starttls")
    starttls = query.get("starttls", "").lower()
    if starttls not in _STARTTLS:
        raise ValueError("VTO_SMTP_URL: starttls must be required, off or auto")
    if use_tls and starttls:
        raise ValueError("VTO_SMTP_URL: smtps:// is TLS already; starttls applies to smtp://")
    return SmtpServer(
        hostname=parts.hostname,
        port=parts.port or (465 if use_tls else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=use_tls,
        start_tls=False if use_tls else _STARTTLS[starttls],
    )


def outgoing_address(address: str) -> tuple[str, bool]:
    """The address as it is written in ``To:`` and the envelope, and whether it needs
    SMTPUTF8: ASCII with an IDNA domain when the local part is ASCII, else as it is."""
    try:
        valid = validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return address, not address.isascii()
    if valid.ascii_email is not None:
        return valid.ascii_email, False
    return valid.normalized, True


@dataclass(frozen=True)
class Mail:
    """One message to one person; ``link`` is the action link its text carries."""

    to: str
    subject: str
    text: str
    link: str


@dataclass
class Mailer:
    """Builds messages with ``email.message.EmailMessage`` and delivers them by SMTP or into
    ``outbox`` (``.eml`` files)."""

    sender: str
    smtp: SmtpServer | None
    outbox: Path
    timeout_s: float = 10.0
    on_failure: Callable[[], object] | None = None  # e.g. a metrics counter's ``inc``

    def message(self, mail: Mail) -> EmailMessage:
        to, utf8 = outgoing_address(mail.to)
        # Without SMTPUTF8 the header would hide a non-ASCII address in an encoded word, which
        # no server can deliver to; with it the address is written as it is.
        message = EmailMessage(policy=policy.SMTPUTF8 if utf8 else policy.default)
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = mail.subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2].strip("> ") or None)
        message.set_content(mail.text)
        return message

    async def deliver(self, mail: Mail) -> bool:
        """Send (or write) the message; False, logged and counted, when that failed."""
        message = self.message(mail)
        try:
            if self.smtp is None:
                path = self._write(message)
                log.info("mail to %s written to %s; link: %s", mail.to, path, mail.link)
            else:
                await aiosmtplib.send(
                    message,
                    recipients=[str(message["To"])],
                    hostname=self.smtp.hostname,
                    port=self.smtp.port,
                    username=self.smtp.username,
                    password=self.smtp.password,
                    use_tls=self.smtp.use_tls,
                    start_tls=self.smtp.start_tls,
                    timeout=self.timeout_s,
                )
                log.info("mail to %s sent: %s", mail.to, mail.subject)
        except (aiosmtplib.SMTPException, OSError) as exc:  # refused, unreachable, TLS, timeout, disk
            log.error("mail to %s could not be delivered: %s: %s", mail.to, type(exc).__name__, exc)
            if self.on_failure is not None:
                self.on_failure()
            return False
        return True

    def _write(self, message: EmailMessage) -> Path:
        self.outbox.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        slug = re.sub(r"[^a-z0-9]+", "-", str(message["Subject"]).lower()).strip("-")[:40]
        path = self.outbox / f"{stamp}-{slug}-{uuid.uuid4().hex[:8]}.eml"
        path.write_bytes(bytes(message))
        return path


def mailer_from_settings(settings: Settings, on_failure: Callable[[], object] | None = None) -> Mailer:
    """SMTP when ``smtp_url`` is set (``ValueError`` on a malformed one), else the mail dir."""
    url = settings.smtp_url.get_secret_value() if settings.smtp_url is not None else ""
    return Mailer(
        sender=settings.mail_from,
        smtp=parse_smtp_url(url) if url else None,
        outbox=settings.data_dir / "mail",
        timeout_s=settings.smtp_timeout_s,
        on_failure=on_failure,
    )
