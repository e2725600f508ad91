"""One form for every email address, used wherever an address comes in or is looked up
(registration, login, password reset, email change, social sign-in, admin grants, shares, the
operator's command line): two addresses that look alike are the same account.

The form (``canonical_email``): Unicode NFKC (full-width a, U+FF41, is ``a``; U+FF20 is ``@``),
trimmed, lower-cased; the domain in its Unicode form after IDNA (UTS 46) processing, so
``xn--bcher-kva.de``, ``BÜCHER.de`` and ``bücher.de`` are one domain. email-validator does the
domain (it is the library pydantic's ``EmailStr`` uses). A text that is not a valid address is
still folded the same way (login and password reset take any text; it then matches nothing).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from pydantic import AfterValidator, Field

EMAIL_MAX = 320


def _folded(value: str) -> str:
    text = unicodedata.normalize("NFKC", value).strip()
    return unicodedata.normalize("NFKC", text.lower())


def _parsed(folded: str) -> ValidatedEmail:
    """``EmailNotValidError`` unless a valid address (syntax only: no DNS lookup)."""
    return validate_email(folded, check_deliverability=False)


def canonical_email(value: str) -> str:
    """The one form of ``value`` (see the module text); never raises."""
    folded = _folded(value)
    local, at, _ = folded.rpartition("@")
    if not at:
        return folded
    try:
        parsed = _parsed(folded)
    except EmailNotValidError:
        return folded
    return f"{local}@{parsed.domain.lower()}"


def valid_email(value: str) -> str:
    """The canonical form of a valid address, or ``ValueError`` (422) saying why not."""
    canonical = canonical_email(value)
    try:
        _parsed(canonical)
    except EmailNotValidError as exc:
        raise ValueError(f"value is not a valid email address: {exc}") from None
    if len(canonical) > EMAIL_MAX:
        raise ValueError(f"an email address has at most {EMAIL_MAX} characters")
    return canonical


EmailAddress = Annotated[
    str,
    Field(max_length=EMAIL_MAX, json_schema_extra={"format": "email"}),
    AfterValidator(valid_email),
]
"""A request field holding a valid address, stored in its canonical form (422 otherwise)."""
