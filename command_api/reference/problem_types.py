"""Every problem ``code`` the API answers with: its HTTP status, what it means and what to do.

A problem response's ``type`` is the URL of this code's page (``/problems/{code}``); the
OpenAPI examples take their ``detail`` from here. The status of a code comes from the class
that raises it (``DomainError`` subclasses, ``LedgerError`` through ``LEDGER_STATUS``) or from
``OTHER_STATUS`` below; ``tests/test_reference.py`` fails when a code has no entry in
``DESCRIPTIONS``."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import TypeVar

from command_api import problems
from ledger.errors import LedgerError

T = TypeVar("T")


@dataclass(frozen=True)
class ProblemType:
    code: str
    status: int
    summary: str  # what happened: the example ``detail``
    advice: str  # what to do about it

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase


# code -> (what happened, what to do)
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    # requests in general
    "bad_request": ("the request is not valid", "Fix the request as its detail says."),
    "validation_error": (
        "the request is not valid",
        "Each item of `errors` names a field (`loc`) and what is wrong with it (`msg`); fix them "
        "and send the request again.",
    ),
    "payload_too_large": (
        "the request body is too large",
        "Send a smaller body: JSON bodies and uploads each have a size limit (`VTO_MAX_JSON_BYTES`, "
        "`VTO_MAX_UPLOAD_BYTES`); the detail says which applies.",
    ),
    "unsupported_media_type": (
        "upload a PNG, JPEG or WebP image",
        "Upload the image as a PNG, JPEG or WebP file.",
    ),
    "method_not_allowed": ("the method is not allowed on this path", "Use a method the path accepts."),
    "not_found": (
        "not found, or not visible to the caller",
        "Check the id. Objects of other accounts answer 404 too, so that their existence is not revealed.",
    ),
    "conflict": ("the request conflicts with the current state", "Read the current state and retry."),
    "forbidden": (
        "the caller may not do this",
        "An admin-only endpoint needs an account holding the admin role, which only the server's "
        "operator grants: `uv run vto admin add EMAIL` on the server. A project shared with you "
        "as a viewer is read-only: its owner can make you an editor.",
    ),
    "too_many_requests": ("too many requests", "Wait for the seconds of `Retry-After`, then retry."),
    "invalid_cursor": (
        "the cursor is not one this API returned",
        "Pass back `next_cursor` of the previous page unchanged, or no cursor for the first page.",
    ),
    "internal_error": (
        "an unexpected error occurred; it has been logged",
        "A bug of the server: the request may or may not have been applied. Report it with the "
        "response's `X-Request-ID` header.",
    ),
    "database_unavailable": (
        "the database is busy or unreachable; retry shortly",
        "Nothing was changed. Retry after the seconds of `Retry-After`.",
    ),
    "not_ready": (
        "a dependency is not ready",
        "The process is starting or a dependency is down: `checks` says which. Send traffic "
        "elsewhere until `/readyz` answers 200.",
    ),
    # sign-in and accounts
    "unauthorized": (
        "an access token is required",
        "Send `Authorization: Bearer <access_token>` with a token from `POST /api/v1/auth/login` "
        "(or `/auth/refresh` once it expired). A token stops working when its account changes "
        "password, is deleted, or signs out everywhere.",
    ),
    "email_not_verified": (
        "the account has not verified its email address",
        "Whoever registered an address may not own it: the account's owner verifies it first "
        "(the mailed link), then retry.",
    ),
    "reauthentication_required": (
        "this step needs you to sign in again",
        "Send your current password with the request; an account without one signs in with its "
        "provider again and retries within a few minutes.",
    ),
    "session_not_found": (
        "no live session of yours has this id",
        "`GET /api/v1/users/me/sessions` lists them.",
    ),
    "too_many_registrations": (
        "too many registrations from this address",
        "Wait the number of seconds in `Retry-After`, then register again.",
    ),
    "invalid_credentials": (
        "the email or password is not correct",
        "Check both, or reset the password with `POST /api/v1/auth/password/forgot`.",
    ),
    "invalid_token": (
        "the refresh token is invalid or expired",
        "Sign in again with `POST /api/v1/auth/login`.",
    ),
    "refresh_token_reused": (
        "this refresh token was already used; every token of its sign-in was revoked",
        "Each refresh token works once: keep the newest one. Sign in again.",
    ),
    "email_taken": ("an account with this email already exists", "Sign in, or reset its password."),
    "too_many_login_attempts": (
        "too many failed sign-ins; try again later",
        "Wait for the seconds of `Retry-After`, or reset the password.",
    ),
    "wrong_password": ("the current password is not correct", "Send the account's current password."),
    "password_not_set": (
        "this account signs in with Google or Kakao and has no password",
        "Set one with `POST /api/v1/auth/password/forgot`.",
    ),
    "email_unchanged": ("the account already has this email", "Nothing to change."),
    "invalid_mail_token": (
        "the link is invalid, used or expired",
        "Ask for a new link (`POST /api/v1/auth/verify-email/resend`, or `/auth/password/forgot`).",
    ),
    "user_not_found": (
        "no live account has this email or id",
        "Check the email or id; the account must have registered and not been deleted.",
    ),
    "unknown_provider": ("no OAuth provider with this name", "Use `google` or `kakao`."),
    "oauth_not_configured": (
        "sign-in with this provider is not configured on this server",
        "The operator sets `VTO_<PROVIDER>_CLIENT_ID` and its secret.",
    ),
    "invalid_state": (
        "the OAuth state does not fit the request",
        "Start again from `GET /api/v1/auth/oauth/{provider}/authorize`.",
    ),
    "oauth_code_rejected": (
        "the provider rejected the authorization code",
        "Start the sign-in again; each code works once.",
    ),
    "oauth_email_required": (
        "the provider did not give a verified email",
        "Allow the email scope at the provider, or register with an email and password.",
    ),
    "oauth_provider_error": ("the provider failed to answer", "Retry later."),
    # catalog
    "invalid_image": (
        "the file is not a decodable image",
        "Upload a PNG, JPEG or WebP file within the size and pixel limits.",
    ),
    "invalid_signature": (
        "the link is invalid or has expired",
        "Read the object again (its job, product or asset) for a fresh link.",
    ),
    "too_many_products": (
        "the project has its maximum number of products",
        "Use another project, or fewer products.",
    ),
    "no_products": ("a job needs at least one product", "Send `product_ids` of the project's products."),
    "wrong_asset_type": (
        "the asset is not of the type this field needs",
        "`model_asset_id` needs an asset of type `model`, `background_asset_id` one of type `background`.",
    ),
    "cannot_share_with_owner": ("the owner already has the project", "Share with another account."),
    "share_not_found": ("the project is not shared with this user", "Check the user id."),
    "invitation_not_found": (
        "no open invitation of yours has this id",
        "`GET /api/v1/invitations` lists the invitations waiting for your verified address.",
    ),
    "email_unverified": (
        "this needs a verified email address",
        "Verify your address with the link mailed to it (`POST /api/v1/auth/verify-email/resend` "
        "mails it again), then retry.",
    ),
    "too_many_invitations": (
        "too many invitations sent for now",
        "Wait the number of seconds in `Retry-After`, then invite again.",
    ),
    "too_many_open_invitations": (
        "the project has too many invitations waiting for an answer",
        "Revoke some (`DELETE /api/v1/projects/{id}/invitations/{invitation_id}`) or wait for answers.",
    ),
    "too_many_uploads": (
        "too many uploads of this account are in progress",
        "Wait for your uploads to finish (`Retry-After` says how long to wait), then send the next.",
    ),
    "uploads_busy": (
        "every upload worker is busy",
        "Retry after the seconds in `Retry-After`; nothing was stored.",
    ),
    # jobs and points (the ledger)
    "insufficient_entitlement": (
        "no subscription, ticket or credits can pay for this job",
        "Points come from an admin's grant (`POST /api/v1/admin/grants`: credits, tickets or a "
        "subscription); `GET /api/v1/points` shows what the account holds. Nothing was charged.",
    ),
    "idempotency_key_reused": (
        "the idempotency key was used for another request",
        "Use a new `Idempotency-Key` for a new job; repeat a request unchanged to get its job.",
    ),
    "job_id_conflict": ("the job id is already taken by another request", "Retry: a new id is drawn."),
    "job_not_found": ("the job is not known to this account", "Check the job id."),
    "job_already_refunded": ("the job was already refunded", "Nothing to do: a job is refunded once."),
    "webhook_url_not_allowed": (
        "the webhook URL is not one we deliver to",
        "Give an http(s) URL of a public host, without credentials: loopback, private, link-local "
        "(169.254.169.254 included) and other internal addresses are refused, at ordering and at "
        "every delivery. Nothing was charged.",
    ),
    "invalid_cancel_after": (
        "the Cancel-After header is not a valid deadline",
        "Give a duration such as `90s`, `10m`, `1h` or `1h30m`, or whole seconds, more than 0 and at "
        "most `VTO_JOB_MAX_DEADLINE_S`. Nothing was charged.",
    ),
    "invalid_deadline": (
        "deadline_s is not a valid deadline",
        "Give whole seconds, more than 0 and at most `VTO_JOB_MAX_DEADLINE_S`. Nothing was charged.",
    ),
    "too_many_streams": (
        "this account has too many live event streams open",
        "Close a stream you no longer read (each account may hold `VTO_SSE_MAX_STREAMS_PER_ACCOUNT` "
        "open over every replica), or poll `GET /api/v1/vto/jobs/{id}`; `Retry-After` says when to retry.",
    ),
    "job_finished": ("the job already finished", "A finished job cannot be canceled."),
    "api_key_not_allowed": (
        "an API key cannot do this",
        "Managing API keys, the password, the email, sign-in sessions, the webhook secret's "
        "rotation, deleting the account and the admin routes need a person signed in: send an "
        "access token from `POST /auth/login`, not a `vto_sk_` key.",
    ),
    "too_many_api_keys": (
        "the account holds the most API keys it may",
        "Revoke a key you no longer use (`DELETE /api-keys/{id}`), then make the new one "
        "(`VTO_API_KEY_MAX_PER_ACCOUNT`).",
    ),
    "job_rate_limited": (
        "too many job orders from this API key or account",
        "Wait for the seconds of `Retry-After`, then order again; nothing was charged. `scope` says "
        "which limit it was: `key` (`VTO_API_KEY_JOBS_PER_MINUTE`) or `account`, all of the "
        "account's keys together (`VTO_API_ACCOUNT_JOBS_PER_MINUTE`).",
    ),
    "account_not_found": ("the user has no ledger account", "Check the user id."),
    "invalid_amount": ("the amount is not valid", "Amounts are positive whole numbers."),
    "balance_would_be_negative": (
        "the balance cannot go below zero",
        "Adjust by at most what the account holds.",
    ),
    "unknown_job_kind": ("unknown job kind", "Use `image` or `video`."),
    "unknown_ticket_type": ("unknown ticket type", "Use a configured ticket type (`lookbook`, `video`)."),
    "unknown_source": ("unknown point source", "Use `credit`, `subscription` or `ticket:<type>`."),
    "ledger_busy": (
        "the account is busy with concurrent requests; retry",
        "Retry after a moment; nothing was charged.",
    ),
    "ledger_error": ("the ledger refused the command", "Fix the request as its detail says."),
    # statements and usage reports
    "invalid_period": (
        "`from` must be before `to`",
        "Give a period whose `from` is before its `to` (ISO 8601 times; without an offset, UTC).",
    ),
    "period_too_long": (
        "the period is longer than a statement covers",
        "Ask for a shorter period (at most `VTO_STATEMENT_MAX_DAYS` days), or several in turn.",
    ),
}

# The codes no exception class carries (answered by ``command_api.problems`` and the ops routes).
OTHER_STATUS: dict[str, int] = {
    **{code: status for status, code in problems.HTTP_CODES.items()},
    "validation_error": 422,
    "internal_error": 500,
    problems.DATABASE_UNAVAILABLE_CODE: 503,
    "not_ready": 503,
}


def _subclasses(cls: type[T]) -> list[type[T]]:
    found: list[type[T]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def statuses() -> dict[str, int]:
    """Every code the API answers with, and its status. Imports every area first (their
    errors are defined in them)."""
    from command_api import routers  # noqa: F401 - defines every area's errors

    found = dict(OTHER_STATUS)
    domain: list[type[problems.DomainError]] = [problems.DomainError, *_subclasses(problems.DomainError)]
    for cls in domain:
        found.setdefault(cls.code, cls.status)
    ledger: list[type[LedgerError]] = [LedgerError, *_subclasses(LedgerError)]
    for error in ledger:
        code = error.code
        found.setdefault(code, problems.LEDGER_STATUS.get(code, problems.LEDGER_DEFAULT_STATUS))
    return found


def catalog() -> dict[str, ProblemType]:
    """Every code with its page's content, in the order of ``DESCRIPTIONS`` (codes without a
    description are left out: the test of this module lists them)."""
    known = statuses()
    return {
        code: ProblemType(code, known[code], summary, advice)
        for code, (summary, advice) in DESCRIPTIONS.items()
        if code in known
    }
