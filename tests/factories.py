"""Small factory functions: each test builds its own data."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from ledger.application import LedgerApplication


def new_user(ledger: LedgerApplication, credits: int = 0, **tickets: int) -> UUID:
    user_id = uuid4()
    ledger.open_account(user_id)
    if credits:
        ledger.grant_credits(user_id, credits, "test grant")
    for ticket_type, count in tickets.items():
        ledger.grant_tickets(user_id, ticket_type, count, "test grant")
    return user_id


def job_request(**overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "project_id": str(uuid4()),
        "product_ids": [str(uuid4())],
        "model_asset_id": str(uuid4()),
    }
    request.update(overrides)
    return request


def ledger_events(ledger: LedgerApplication, user_id: UUID) -> list[Any]:
    return list(ledger.events.get(user_id))
