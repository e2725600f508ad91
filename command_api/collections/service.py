"""Collections: create, list (the caller's, newest first), rename. Never commits."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from command_api.catalog import cursors
from command_api.catalog.access import owned_collection
from command_api.catalog.models import Collection
from command_api.collections.schemas import CollectionIn, CollectionPatch


def create(session: Session, owner_id: uuid.UUID, body: CollectionIn) -> Collection:
    collection = Collection(owner_id=owner_id, name=body.name, description=body.description)
    session.add(collection)
    session.flush()
    return collection


def list_owned(
    session: Session, owner_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[Collection], str | None]:
    query = select(Collection).where(Collection.owner_id == owner_id)
    after = cursors.after(Collection.created_at, Collection.id, cursor, descending=True)
    if after is not None:
        query = query.where(after)
    query = query.order_by(Collection.created_at.desc(), Collection.id.desc()).limit(limit + 1)
    return cursors.page(list(session.scalars(query)), limit)


def update(
    session: Session, owner_id: uuid.UUID, collection_id: uuid.UUID, body: CollectionPatch
) -> Collection:
    collection = owned_collection(session, owner_id, collection_id)
    for field in body.model_fields_set:
        setattr(collection, field, getattr(body, field))
    session.flush()
    return collection
