"""infra/mail.py: the SMTP URL forms, delivery to a real SMTP server (aiosmtpd), the offline
mail directory, and failures that are logged and counted instead of raised."""

from __future__ import annotations

import asyncio
import logging
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from infra.mail import Mail, Mailer, SmtpServer, mailer_from_settings, parse_smtp_url
from infra.settings import Settings
from tests.mail_fixtures import Inbox, ascii_smtp_server, free_port, smtp_server  # noqa: F401  (fixtures)

MAIL = Mail(
    to="buyer@example.com",
    subject="Confirm your email address",
    text="Open https://app.example.com/verify-email?token=abc-123 while signed in.",
    link="https://app.example.com/verify-email?token=abc-123",
)


def test_smtp_url_forms() -> None:
    assert parse_smtp_url("smtp://mail.example.com") == SmtpServer(
        "mail.example.com", 25, None, None, False, None
    )
    assert parse_smtp_url("smtp://u%40x:p%3Ass@mail.example.com:587?starttls=required") == SmtpServer(
        "mail.example.com", 587, "u@x", "p:ss", False, True
    )
    assert parse_smtp_url("smtp://mail.example.com:2525?starttls=off").start_tls is False
    assert parse_smtp_url("smtps://user:pw@mail.example.com") == SmtpServer(
        "mail.example.com", 465, "user", "pw", True, False
    )
    for bad in [
        "http://mail.example.com",
        "smtp://",
        "smtp://mail.example.com?starttls=maybe",
        "smtp://mail.example.com?tls=1",
        "smtps://mail.example.com?starttls=required",
    ]:
        with pytest.raises(ValueError, match="VTO_SMTP_URL"):
            parse_smtp_url(bad)


def test_the_smtp_url_is_a_secret_and_a_malformed_one_stops_the_start(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, smtp_url="smtp://me:hunter22@mail.example.com")  # type: ignore[call-arg]
    assert "hunter22" not in repr(settings) and "hunter22" not in str(settings.model_dump())
    assert mailer_from_settings(settings).smtp == SmtpServer(
        "mail.example.com", 25, "me", "hunter22", False, None
    )
    with pytest.raises(ValueError, match="VTO_SMTP_URL"):
        mailer_from_settings(Settings(_env_file=None, data_dir=tmp_path, smtp_url="mail.example.com"))  # type: ignore[call-arg]


def test_delivery_through_a_real_smtp_server(smtp_server: Inbox, tmp_path: Path) -> None:  # noqa: F811
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, smtp_url=smtp_server.url, mail_from="Shop <shop@vto.example>"
    )
    mailer = mailer_from_settings(settings)
    assert asyncio.run(mailer.deliver(MAIL)) is True
    [message] = smtp_server.messages
    assert (message["From"], message["To"], message["Subject"]) == (
        "Shop <shop@vto.example>",
        "buyer@example.com",
        "Confirm your email address",
    )
    assert message["Message-ID"].endswith("@vto.example>") and message["Date"]
    assert MAIL.link in message.get_content()
    assert smtp_server.envelopes == [("shop@vto.example", ["buyer@example.com"])]
    assert not (tmp_path / "mail").exists()


def test_without_smtp_each_message_is_an_eml_file_and_its_link_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mailer = mailer_from_settings(Settings(_env_file=None, data_dir=tmp_path))  # type: ignore[call-arg]
    assert mailer.smtp is None
    with caplog.at_level(logging.INFO, logger="infra.mail"):
        assert asyncio.run(mailer.deliver(MAIL)) is True
        assert asyncio.run(mailer.deliver(MAIL)) is True
    paths = sorted((tmp_path / "mail").glob("*.eml"))
    assert len(paths) == 2
    message = message_from_bytes(paths[0].read_bytes(), policy=policy.default)
    assert (message["To"], message["Subject"]) == ("buyer@example.com", "Confirm your email address")
    assert MAIL.link in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert caplog.text.count(MAIL.link) == 2 and str(paths[0]) in caplog.text


def test_a_failed_delivery_is_logged_and_counted_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[int] = []
    nobody = Mailer(
        sender="VTO <no-reply@localhost>",
        smtp=parse_smtp_url(f"smtp://127.0.0.1:{free_port()}"),
        outbox=tmp_path / "mail",
        timeout_s=5,
        on_failure=lambda: failures.append(1),
    )
    assert asyncio.run(nobody.deliver(MAIL)) is False
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    unwritable = Mailer(
        sender="VTO <a@b.c>", smtp=None, outbox=blocked / "mail", on_failure=lambda: failures.append(1)
    )
    assert asyncio.run(unwritable.deliver(MAIL)) is False
    assert failures == [1, 1]
    assert caplog.text.count("mail to buyer@example.com could not be delivered") == 2


def _to(address: str) -> Mail:
    return Mail(to=address, subject=MAIL.subject, text=MAIL.text, link=MAIL.link)


def test_an_internationalised_domain_is_kept_as_its_ascii_form(smtp_server: Inbox, tmp_path: Path) -> None:  # noqa: F811
    """An ASCII local part at a Unicode domain goes out as plain ASCII (IDNA): the domain was
    lost before (an encoded word in place of the domain)."""
    settings = Settings(_env_file=None, data_dir=tmp_path, smtp_url=smtp_server.url)  # type: ignore[call-arg]
    assert asyncio.run(mailer_from_settings(settings).deliver(_to("bob@bücher.example"))) is True
    [message] = smtp_server.messages
    assert message["To"] == "bob@xn--bcher-kva.example"
    assert smtp_server.envelopes[0][1] == ["bob@xn--bcher-kva.example"]


def test_a_unicode_local_part_goes_by_smtputf8_with_its_domain(
    smtp_server: Inbox,  # noqa: F811
    ascii_smtp_server: Inbox,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    address = "用户@例子.广告"
    settings = Settings(_env_file=None, data_dir=tmp_path, smtp_url=smtp_server.url)  # type: ignore[call-arg]
    assert asyncio.run(mailer_from_settings(settings).deliver(_to(address))) is True
    [message] = smtp_server.messages
    assert message["To"] == address
    assert smtp_server.envelopes[0][1] == [address]
    # A server without SMTPUTF8 cannot take it: a failure, logged and counted, not an error.
    failures: list[int] = []
    plain = Settings(_env_file=None, data_dir=tmp_path, smtp_url=ascii_smtp_server.url)  # type: ignore[call-arg]
    mailer = mailer_from_settings(plain, on_failure=lambda: failures.append(1))
    assert asyncio.run(mailer.deliver(_to(address))) is False
    assert failures == [1] and ascii_smtp_server.messages == []
    assert "could not be delivered" in caplog.text


def test_the_mail_directory_keeps_an_internationalised_address(tmp_path: Path) -> None:
    mailer = mailer_from_settings(Settings(_env_file=None, data_dir=tmp_path))  # type: ignore[call-arg]
    for address in ("用户@例子.广告", "bob@bücher.example"):
        assert asyncio.run(mailer.deliver(_to(address))) is True
    written = {
        str(message_from_bytes(path.read_bytes(), policy=policy.default)["To"])
        for path in (tmp_path / "mail").glob("*.eml")
    }
    assert written == {"用户@例子.广告", "bob@xn--bcher-kva.example"}
