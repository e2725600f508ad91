"""Assets: upload and read back the caller's own. Never commits."""

from __future__ import annotations

import uuid
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from command_api.catalog.images import check_image, read_limited
from command_api.catalog.media import store
from command_api.catalog.models import Asset
from command_api.pagination import keyset_page
from infra.storage import Storage


def add(
    session: Session,
    storage: Storage,
    owner_id: uuid.UUID,
    upload: BinaryIO,
    *,
    max_bytes: int,
    type_: str,
    name: str | None,
) -> Asset:
    image = check_image(read_limited(upload, max_bytes))
    asset_id = uuid.uuid4()
    asset = Asset(
        id=asset_id, owner_id=owner_id, type=type_, name=name, **store(storage, "assets", asset_id, image)
    )
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
