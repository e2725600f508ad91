"""Assets: add (the image already checked and stored: ``command_api.catalog.uploads``), read
back and delete the caller's own. Never commits."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from command_api.catalog.deletion import erase_later
from command_api.catalog.models import Asset
from command_api.pagination import keyset_page
from command_api.problems import NotFound
from infra.settings import Settings


def add(
    session: Session,
    owner_id: uuid.UUID,
    asset_id: uuid.UUID,
    stored: dict[str, Any],
    *,
    type_: str,
    name: str | None,
) -> Asset:
    """The row of an image stored as ``stored`` (``catalog.media.store``'s columns)."""
    asset = Asset(id=asset_id, owner_id=owner_id, type=type_, name=name, **stored)
    session.add(asset)
    session.flush()
    return asset


def list_owned(
    session: Session, owner_id: uuid.UUID, type_: str | None, limit: int, cursor: str | None
) -> tuple[list[Asset], str | None]:
    query = select(Asset).where(Asset.owner_id == owner_id)
    if type_ is not None:
        query = query.where(Asset.type == type_)
    return keyset_page(session, query, Asset, limit, cursor, descending=True)


def delete_owned(session: Session, settings: Settings, owner_id: uuid.UUID, asset_id: uuid.UUID) -> None:
    """Deletes the caller's asset (404 for anyone else's); its object is erased once no job
    ordered before can need it (``catalog.deletion``)."""
    key = session.scalar(
        delete(Asset).where(Asset.id == asset_id, Asset.owner_id == owner_id).returning(Asset.storage_key)
    )
    if key is None:
        raise NotFound("asset")
    erase_later(session, settings, [key], "asset deleted")
