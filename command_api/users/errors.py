"""The account rules that a request or an operator command can break, one class each (status
and ``code`` fixed by the class); ``command_api.problems`` answers them as problem responses."""

from __future__ import annotations

from command_api.problems import DomainError


class NoLiveUser(DomainError):
    """No live (registered, not deleted) account has that email."""

    status, code = 404, "user_not_found"

    def __init__(self, email: str) -> None:
        super().__init__(f"no registered account has the email {email!r}")


class UnverifiedEmail(DomainError):
    """The account's owner never proved its email: whoever registered the address may not be
    the person it names (``vto admin add`` refuses such an account unless forced)."""

    status, code = 409, "email_not_verified"

    def __init__(self, email: str) -> None:
        super().__init__(
            f"the account {email!r} has not verified its email address: whoever registered it may not own it"
        )


class SessionNotFound(DomainError):
    """No live sign-in session of the caller's has that id (another user's answers the same)."""

    status, code = 404, "session_not_found"

    def __init__(self) -> None:
        super().__init__("no live session of yours has this id")
