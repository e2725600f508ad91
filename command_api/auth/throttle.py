"""Failed-login throttling per account and per client address, shared by every API replica
(the counters are rows of ``login_throttle`` in PostgreSQL; migration 0009).

The rules:
- Two counters per attempt: the account (the email as given, lower-cased, whether or not an
  account has it) and the client address (``request.client.host``: the TCP peer; behind a
  reverse proxy on 127.0.0.1 uvicorn puts the ``X-Forwarded-For`` address there, and
  ``FORWARDED_ALLOW_IPS`` names other trusted proxies).
- Each counter has a fixed window of ``login_window_s`` from its first counted attempt.
- An attempt is counted before the password is checked, in its own short transaction that
  commits at once: a failed login raises ``InvalidCredentials``, which rolls back the request's
  session, and concurrent guesses cannot all slip in under the limit before the first fails.
- Once an account has had ``login_max_failures_per_account`` attempts in its window, or an
  address ``login_max_failures_per_address``, further attempts are refused with 429
  ``too_many_login_attempts`` and ``Retry-After`` (seconds to the end of the window) without
  checking the password.
- A successful login clears the account's counter and takes its own attempt back from the
  address (a shared office address is not throttled by the sign-ins that succeed)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import Engine
from starlette.requests import Request

from command_api.auth import throttle_repository as repository
from command_api.auth.errors import TooManyLoginAttempts
from infra.settings import Settings

UNKNOWN_ADDRESS = "unknown"  # a transport that names no peer (all such clients share one counter)
COUNT_CAP = 1_000_000  # counters stop growing here
FORGET_BATCH = 100  # expired counters deleted per counted attempt (keeps the table small)


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else UNKNOWN_ADDRESS


@dataclass(frozen=True)
class LoginThrottle:
    engine: Engine
    window_s: int
    max_per_account: int
    max_per_address: int

    @classmethod
    def of(cls, engine: Engine, settings: Settings) -> LoginThrottle:
        return cls(
            engine,
            settings.login_window_s,
            settings.login_max_failures_per_account,
            settings.login_max_failures_per_address,
        )

    def admit(self, email: str, address: str) -> None:
        """Count an attempt (committed at once); ``TooManyLoginAttempts`` when the account or
        the address is over its limit."""
        with self.engine.begin() as conn:
            account, account_left = repository.count(conn, "account", email, self.window_s, COUNT_CAP)
            by_address, address_left = repository.count(conn, "address", address, self.window_s, COUNT_CAP)
            repository.forget_expired(conn, self.window_s, FORGET_BATCH)
        waits = [account_left] if account > self.max_per_account else []
        waits += [address_left] if by_address > self.max_per_address else []
        if waits:
            raise TooManyLoginAttempts(max(1, math.ceil(max(waits))))

    def succeeded(self, email: str, address: str) -> None:
        with self.engine.begin() as conn:
            repository.clear(conn, "account", email)
            repository.take_back(conn, "address", address)
