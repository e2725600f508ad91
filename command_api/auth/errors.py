"""The sign-in rules that a request can break, one class each (status and ``code`` fixed by
the class); ``command_api.problems`` answers them as problem responses."""

from __future__ import annotations

from command_api.problems import DomainError


class Unauthorized(DomainError):
    """No access token, or one that is invalid, expired or revoked."""

    status, code = 401, "unauthorized"


class EmailTaken(DomainError):
    status, code = 409, "email_taken"

    def __init__(self) -> None:
        super().__init__("an account with this email already exists")


class InvalidCredentials(DomainError):
    status, code = 401, "invalid_credentials"

    def __init__(self) -> None:
        super().__init__("the email or password is not correct")


class InvalidRefreshToken(DomainError):
    status, code = 401, "invalid_token"

    def __init__(self, detail: str = "the refresh token is invalid or expired") -> None:
        super().__init__(detail)


class RefreshTokenReused(DomainError):
    """A used refresh token came back: its family was revoked (in the session, to be kept)."""

    status, code = 401, "refresh_token_reused"

    def __init__(self) -> None:
        super().__init__("this refresh token was already used; every token of its sign-in was revoked")


class SignInConflict(DomainError):
    status, code = 409, "conflict"

    def __init__(self) -> None:
        super().__init__("a concurrent sign-in is in progress; retry")


class UnknownProvider(DomainError):
    status, code = 404, "unknown_provider"

    def __init__(self, name: str) -> None:
        super().__init__(f"no OAuth provider named {name!r}")


class OAuthNotConfigured(DomainError):
    status, code = 503, "oauth_not_configured"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"sign-in with {name} is not configured on this server (VTO_{name.upper()}_CLIENT_ID is not set)"
        )


class InvalidState(DomainError):
    """The OAuth ``state`` (with its PKCE challenge) does not fit the request."""

    status, code = 400, "invalid_state"


class OAuthCodeRejected(DomainError):
    status, code = 400, "oauth_code_rejected"


class OAuthEmailRequired(DomainError):
    status, code = 400, "oauth_email_required"


class OAuthProviderError(DomainError):
    status, code = 502, "oauth_provider_error"

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"{name} sign-in failed: {why}")


class InvalidMailToken(DomainError):
    """A link's token that is unknown, already used (or revoked), expired, or for something
    else than this request."""

    status, code = 400, "invalid_mail_token"


class WrongPassword(DomainError):
    status, code = 403, "wrong_password"

    def __init__(self) -> None:
        super().__init__("the current password is not correct")


class ReauthenticationRequired(DomainError):
    """A step that needs the owner there now (deleting the account): the password, or a
    provider sign-in that has just happened."""

    status, code = 403, "reauthentication_required"


class PasswordNotSet(DomainError):
    status, code = 409, "password_not_set"

    def __init__(self) -> None:
        super().__init__(
            "this account signs in with Google or Kakao and has no password; set one with "
            "POST /auth/password/forgot"
        )


class EmailUnchanged(DomainError):
    status, code = 409, "email_unchanged"

    def __init__(self) -> None:
        super().__init__("the account already has this email")


class TooManyLoginAttempts(DomainError):
    """Too many failed logins for this email or from this address (``auth/throttle.py``)."""

    status, code = 429, "too_many_login_attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many failed sign-ins; try again in {retry_after} s",
            retry_after=retry_after,
            headers={"Retry-After": str(retry_after)},
        )


class TooManyRegistrations(DomainError):
    """Too many registrations from this client address (``auth/throttle.py``)."""

    status, code = 429, "too_many_registrations"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many registrations from this address; try again in {retry_after} s",
            retry_after=retry_after,
            headers={"Retry-After": str(retry_after)},
        )
