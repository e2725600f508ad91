"""Password throttling per account and per client address, shared by every API replica (the
counters are rows of ``login_throttle`` in PostgreSQL; migration 0009). Every check of a
password goes through it: login, email change, password change and account deletion share
one counter per account, so a stolen access token gives no more guesses than the login form.

The rules (``PasswordGuard.check``):
- Two counters per attempt: the account (its canonical email, whether or not an account has
  it) and the client address (``request.client.host``: the TCP peer, or the client that the
  proxies named in ``VTO_TRUSTED_PROXIES`` forward; ``command_api.app``).
- Each counter has a fixed window of ``login_window_s`` from its first counted attempt.
- An attempt is counted before the password is checked, in its own short transaction that
  commits at once: a failure rolls back the request's session, and concurrent guesses cannot
  all slip in under the limit before the first fails.
- An account that has had ``login_max_failures_per_account`` attempts in its window is
  refused (429 ``too_many_login_attempts``, ``Retry-After``: seconds to the end of the window)
  without checking the password, from any address.
- An address over ``login_max_failures_per_address`` does not refuse by itself: the password
  is still checked, and a live account's correct password goes through (other accounts'
  failures from a shared address, an office or a carrier's NAT, cannot lock its users out).
  Every failure from it is answered 429, whether or not the account exists, so the answer
  tells nothing about which emails have accounts (an unknown email is checked against a dummy
  hash, as always, so the time does not tell either). Guessing against known accounts is
  bounded by their own counters; see docs/security-accounts-and-sessions.md for why.
- A success clears the account's counter and takes its own attempt back from the address.

Registrations are counted per client address too (``admit_registration``, kind
``register``), every attempt, in a window of their own."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine
from starlette.requests import Request

from command_api.auth import throttle_repository as repository
from command_api.auth.errors import TooManyLoginAttempts, TooManyRegistrations
from infra.settings import Settings

UNKNOWN_ADDRESS = "unknown"  # a transport that names no peer (all such clients share one counter)
COUNT_CAP = 1_000_000  # counters stop growing here
FORGET_BATCH = 100  # expired counters deleted per counted attempt (keeps the table small)


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else UNKNOWN_ADDRESS


@dataclass(frozen=True)
class PasswordGuard:
    """The password checks of one request, from one client address."""

    engine: Engine
    address: str
    window_s: int
    max_per_account: int
    max_per_address: int

    @classmethod
    def of(cls, engine: Engine, settings: Settings, address: str) -> PasswordGuard:
        return cls(
            engine,
            address,
            settings.login_window_s,
            settings.login_max_failures_per_account,
            settings.login_max_failures_per_address,
        )

    def check(self, account: str, verify: Callable[[], bool]) -> bool:
        """Count an attempt at ``account`` (committed at once), then run ``verify`` (the
        password check): its answer, or ``TooManyLoginAttempts`` when the account is over its
        limit (``verify`` not run) or when it failed and the address is over its limit."""
        with self.engine.begin() as conn:
            tries, account_left = repository.count(conn, "account", account, self.window_s, COUNT_CAP)
            by_address, address_left = repository.count(
                conn, "address", self.address, self.window_s, COUNT_CAP
            )
            repository.forget_expired(conn, ["account", "address"], self.window_s, FORGET_BATCH)
        if tries > self.max_per_account:
            raise TooManyLoginAttempts(max(1, math.ceil(account_left)))
        if verify():
            with self.engine.begin() as conn:
                repository.clear(conn, "account", account)
                repository.take_back(conn, "address", self.address)
            return True
        if by_address > self.max_per_address:
            raise TooManyLoginAttempts(max(1, math.ceil(address_left)))
        return False


def admit_registration(engine: Engine, settings: Settings, address: str) -> None:
    """Count a registration from ``address`` (committed at once, whatever its outcome: a 409
    tells whether an address has an account); ``TooManyRegistrations`` past
    ``register_max_per_address`` in ``register_window_s``."""
    window = settings.register_window_s
    with engine.begin() as conn:
        count, left = repository.count(conn, "register", address, window, COUNT_CAP)
        repository.forget_expired(conn, ["register"], window, FORGET_BATCH)
    if count > settings.register_max_per_address:
        raise TooManyRegistrations(max(1, math.ceil(left)))
