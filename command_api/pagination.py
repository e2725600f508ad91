"""Cursor pagination: ``?limit=&cursor=`` -> ``Page[T]`` = ``{"items": [...], "next_cursor": ...}``.

One cursor format for every list: the sort key of a page's last item, its parts joined by
``.`` (integers in decimal, datetimes as microseconds since the epoch, UUIDs as 32 hex digits),
opaque to clients and stable under inserts. One page-end rule: a list fetches ``limit + 1``
rows, and a page has a ``next_cursor`` only when that extra row came back (so no list ends
with an empty page)."""

from __future__ import annotations

import re
import typing
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, ConfigDict
from pydantic.config import JsonDict
from sqlalchemy import Select, tuple_
from sqlalchemy.orm import Session

from command_api.inputs import Text
from command_api.problems import DomainError

Limit = Annotated[int, Query(ge=1, le=200, description="Items per page")]
Cursor = Annotated[Text | None, Query(max_length=64, description="next_cursor of the previous page")]

T = TypeVar("T")
R = TypeVar("R")
KeyPart = int | datetime | uuid.UUID
Key = tuple[KeyPart, ...]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)
MAX_INT = 2**63 - 1  # integer parts are PostgreSQL bigints
_DIGITS = re.compile(r"[0-9]{1,19}")
_HEX32 = re.compile(r"[0-9a-f]{32}")


class InvalidCursor(DomainError):
    status, code = 400, "invalid_cursor"

    def __init__(self) -> None:
        super().__init__("the cursor is not one this API returned")


def _example(schema: JsonDict, cls: type[Any]) -> None:
    """The page's example: one item, the item model's own example, and no next page."""
    (item,) = typing.get_args(cls.model_fields["items"].annotation) or (None,)
    extra = getattr(item, "model_config", {}).get("json_schema_extra")
    if isinstance(extra, dict) and "example" in extra:
        schema["example"] = {"items": [extra["example"]], "next_cursor": None}


class Page(BaseModel, Generic[T]):
    """One page of a list, and the cursor of the next one (``null`` on the last page)."""

    model_config = ConfigDict(json_schema_extra=_example)
    items: list[T]
    next_cursor: str | None


def _encode_part(part: KeyPart) -> str:
    if isinstance(part, datetime):
        return str((part - EPOCH) // ONE_MICROSECOND)
    if isinstance(part, uuid.UUID):
        return part.hex
    return str(part)


def _decode_part(text: str, kind: type[KeyPart]) -> KeyPart:
    # ASCII only: str.isdigit and int() also take other scripts' digits ("\u0663" is 3).
    if kind is uuid.UUID:
        if _HEX32.fullmatch(text) is None:
            raise ValueError(text)
        return uuid.UUID(hex=text)
    if _DIGITS.fullmatch(text) is None or int(text) > MAX_INT:
        raise ValueError(text)
    return EPOCH + int(text) * ONE_MICROSECOND if kind is datetime else int(text)


def encode(key: Sequence[KeyPart]) -> str:
    return ".".join(_encode_part(part) for part in key)


def decode(cursor: str | None, *kinds: type[KeyPart]) -> Key | None:
    """The sort key a cursor holds (None: the first page), its parts of ``kinds``; raises
    ``InvalidCursor`` (400 ``invalid_cursor``) for anything ``encode`` did not make."""
    if cursor is None:
        return None
    parts = cursor.split(".")
    try:
        if len(parts) != len(kinds):
            raise ValueError(cursor)
        return tuple(_decode_part(text, kind) for text, kind in zip(parts, kinds, strict=True))
    except (ValueError, OverflowError):
        raise InvalidCursor() from None


def cut(rows: Sequence[R], limit: int, key: Callable[[R], Sequence[KeyPart]]) -> tuple[list[R], str | None]:
    """The page-end rule: ``rows`` were fetched with ``limit + 1``; the page is the first
    ``limit`` of them, with the cursor of its last item when there is a further row."""
    page = list(rows[:limit])
    return page, encode(key(page[-1])) if len(rows) > limit else None


def created_key(row: Any) -> Key:
    return row.created_at, row.id


def keyset_page(
    session: Session, query: Select[Any], model: Any, limit: int, cursor: str | None, *, descending: bool
) -> tuple[list[Any], str | None]:
    """A page of ``query`` (over ``model``'s rows) in ``(created_at, id)`` order, newest first
    when ``descending``, after the row ``cursor`` names."""
    key = tuple_(model.created_at, model.id)
    after = decode(cursor, datetime, uuid.UUID)
    if after is not None:
        query = query.where(key < tuple_(*after) if descending else key > tuple_(*after))
    order = (model.created_at.desc(), model.id.desc()) if descending else (model.created_at, model.id)
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    return cut(rows, limit, created_key)
