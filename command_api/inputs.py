"""The rule every text that enters the API obeys: no control characters.

NUL and the other C0/C1 control characters (tab, line feed and carriage return excepted) and
lone UTF-16 surrogates are refused with 422 wherever text comes in: every field and key of a
JSON body (``InputModel``), form fields and query parameters (``check_text``). PostgreSQL
cannot store NUL in text and a surrogate cannot be encoded as UTF-8; both would otherwise
reach the database (or the event store, where a projection would fail on them).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, model_validator

# C0 controls but \t \n \r, DEL, C1 controls, and the surrogate range.
_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def has_control(text: str) -> bool:
    return _REFUSED.search(text) is not None


def check_text(text: str) -> str:
    """``text`` unchanged, or ``ValueError`` naming the first refused character."""
    found = _REFUSED.search(text)
    if found is not None:
        raise ValueError(f"control character U+{ord(found.group()):04X} is not allowed")
    return text


def without_controls(text: str) -> str:
    """``text`` with each refused character replaced by a space: for text that comes from a
    party that cannot be answered 422 (a provider's profile), so the same rule holds."""
    return _REFUSED.sub(" ", text)


NoControls = AfterValidator(check_text)
"""Refuses control characters (422); put it after a ``StringConstraints`` it goes with."""

Text = Annotated[str, NoControls]
"""A ``str`` that refuses control characters (422): the type of every text query parameter and
form field (``Annotated[Text | None, Query(...)]``)."""


def _refuse_controls(value: Any, path: str) -> None:
    if isinstance(value, str):
        if has_control(value):
            raise ValueError(f"{path or 'body'}: control characters (such as NUL) are not allowed")
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and has_control(key):
                raise ValueError(f"{path or 'body'}: a key contains control characters")
            _refuse_controls(item, where)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _refuse_controls(item, f"{path}[{index}]")


class InputModel(BaseModel):
    """Base of every request body: refuses control characters anywhere in it (422)."""

    @model_validator(mode="before")
    @classmethod
    def _no_control_characters(cls, data: Any) -> Any:
        _refuse_controls(data, "")
        return data
