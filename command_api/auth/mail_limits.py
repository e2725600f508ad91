"""How much mail a request may cause, beside the one-per-kind-per-account interval: mailed
links are counted per recipient address and per client address (rows of ``mail_tokens``, each
recording where it went and which client address asked: migration 0015), so that neither new
accounts nor many accounts, nor one client spraying many addresses, can flood a mailbox.

The rules (``MailLimits.allow``), each over ``mail_window_s`` (an hour):
- one account: at most one mail of a kind per ``mail_min_interval_s`` (a minute);
- one recipient: at most ``mail_max_per_recipient`` mails (3), every kind and account;
- one recipient is sent a verification or email-change link (a *claim* of the address) for
  one account only: another account's claim inside the window sends nothing (registering,
  deleting and registering again, or several accounts asking for the victim's address);
- one client address causes at most ``mail_max_per_client_address`` mails (10).

A request over a limit is answered as usual (202, or the new account): nothing tells whether a
mail went out. The checks of one recipient or one client address are serialized across API
replicas by transaction-scoped advisory locks (taken in one order, held until the request's
transaction ends), so concurrent requests cannot all pass before the first token is written."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import exists, func, select, text
from sqlalchemy.orm import Session

from command_api.users.models import CHANGE_EMAIL, VERIFY_EMAIL, MailToken, User
from infra.settings import Settings

CLAIMS = (VERIFY_EMAIL, CHANGE_EMAIL)
_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


@dataclass(frozen=True)
class MailLimits:
    settings: Settings
    client_address: str

    def allow(self, session: Session, user: User, purpose: str, to: str) -> bool:
        """Whether a mail of ``purpose`` for ``user`` may go to ``to`` now (the token written
        next, in the same transaction, counts for the requests after this one)."""
        for key in sorted({f"mail to {to}", f"mail from {self.client_address}"}):
            session.execute(_LOCK, {"key": key})
        now = datetime.now(UTC)
        interval = self.settings.mail_min_interval_s
        if interval > 0 and self._any(
            session,
            MailToken.user_id == user.id,
            MailToken.purpose == purpose,
            MailToken.created_at > now - timedelta(seconds=interval),
        ):
            return False
        since = now - timedelta(seconds=self.settings.mail_window_s)
        if purpose in CLAIMS and self._any(
            session,
            MailToken.email == to,
            MailToken.purpose.in_(CLAIMS),
            MailToken.user_id != user.id,
            MailToken.created_at > since,
        ):
            return False
        to_recipient = self._count(session, MailToken.email == to, MailToken.created_at > since)
        if to_recipient >= self.settings.mail_max_per_recipient:
            return False
        from_client = self._count(
            session, MailToken.client_address == self.client_address, MailToken.created_at > since
        )
        return from_client < self.settings.mail_max_per_client_address

    @staticmethod
    def _any(session: Session, *where: object) -> bool:
        return bool(session.scalar(select(exists().where(*where))))  # type: ignore[arg-type]

    @staticmethod
    def _count(session: Session, *where: object) -> int:
        return int(session.scalar(select(func.count()).select_from(MailToken).where(*where)) or 0)  # type: ignore[arg-type]
