"""What a projection is: a name, the read-model tables it owns, and how a batch of events
changes them (inside the runner's transaction)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import psycopg

from projections.events import Notified


class Projection(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def tables(self) -> tuple[str, ...]: ...

    def apply(self, cur: psycopg.Cursor[Any], batch: Sequence[Notified], tables: Mapping[str, str]) -> None:
        """Apply ``batch`` (in log order) to the read model. ``tables`` maps each of
        ``self.tables`` to the physical table to write (the live one, or a rebuild's)."""
        ...


def identity(tables: tuple[str, ...]) -> dict[str, str]:
    return {t: t for t in tables}
