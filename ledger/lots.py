"""Lots: the grants a balance is made of, and the order a charge burns them in.

Every grant of credits or tickets (and every positive adjustment) is a lot of its source: an
amount, a ``category`` (``paid`` or ``promotional``) and, optionally, the instant it expires.
A lot's id is the stream version of the event that granted it (unique in the user's stream;
an account keys its lots by the id as text, as it keys its jobs). A source's balance is the sum
of what its lots have left.

Within one source, a charge burns lots in this order (``burn_key``): the earliest expiry
first (a lot that never expires last), then promotional before paid, then the oldest (lowest
id) first. The order between sources is the pricing policy's (subscription, tickets of the
job's kind, credits) and unchanged. A lot whose expiry has come is not burnt, whether or not its
expiry has been recorded yet (``Account.PointsExpired``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypedDict


class Category(StrEnum):
    PAID = "paid"
    PROMOTIONAL = "promotional"


class LotRecord(TypedDict):
    """A lot as an account holds it."""

    source: str
    category: str
    expires_at: datetime | None
    granted_at: datetime
    amount: int  # granted
    left: int  # not burnt, not expired


class DrawRecord(TypedDict):
    """Points taken from (or given back to) one lot: how events record them."""

    lot: int
    amount: int


@dataclass(frozen=True, slots=True)
class Draw:
    lot: int
    amount: int

    def record(self) -> DrawRecord:
        return DrawRecord(lot=self.lot, amount=self.amount)


def draws_of(records: Iterable[DrawRecord] | None) -> tuple[Draw, ...] | None:
    return None if records is None else tuple(Draw(int(r["lot"]), int(r["amount"])) for r in records)


def usable(lot: LotRecord, at: datetime) -> bool:
    """Whether the lot can still be burnt at ``at``: points left, expiry not come."""
    return lot["left"] > 0 and (lot["expires_at"] is None or lot["expires_at"] > at)


def burn_key(lot_id: str, lot: LotRecord) -> tuple[bool, datetime, int, int]:
    """Earliest expiry first (never last), then promotional before paid, then the oldest."""
    expires = lot["expires_at"]
    return (
        expires is None,
        expires if expires is not None else datetime.max.replace(tzinfo=lot["granted_at"].tzinfo),
        0 if lot["category"] == Category.PROMOTIONAL else 1,
        int(lot_id),
    )


def draw(lots: Mapping[str, LotRecord], source: str, amount: int, at: datetime) -> tuple[Draw, ...]:
    """The lots ``amount`` points of ``source`` are burnt from at ``at``, in the burn order.
    Draws what there is when the usable lots hold less (the caller checked the balance)."""
    taken: list[Draw] = []
    wanted = amount
    candidates = sorted(
        ((lot_id, lot) for lot_id, lot in lots.items() if lot["source"] == source and usable(lot, at)),
        key=lambda item: burn_key(*item),
    )
    for lot_id, lot in candidates:
        if wanted <= 0:
            break
        n = min(wanted, lot["left"])
        taken.append(Draw(int(lot_id), n))
        wanted -= n
    return tuple(taken)


def usable_balance(lots: Mapping[str, LotRecord], source: str, at: datetime) -> int:
    return sum(lot["left"] for lot in lots.values() if lot["source"] == source and usable(lot, at))


def due(lots: Mapping[str, LotRecord], at: datetime) -> list[str]:
    """The lots with points left whose expiry has come at ``at``, by expiry then id."""
    found = [
        (lot["expires_at"], int(lot_id), lot_id)
        for lot_id, lot in lots.items()
        if lot["left"] > 0 and lot["expires_at"] is not None and lot["expires_at"] <= at
    ]
    return [lot_id for *_, lot_id in sorted(found)]
