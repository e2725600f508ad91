"""Collections: create, list (the caller's, newest first), rename, delete (with their projects).
Never commits."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from command_api.catalog.access import owned_collection
from command_api.catalog.deletion import delete_projects
from command_api.catalog.models import Collection, Project
from command_api.collections.schemas import CollectionIn, CollectionPatch
from command_api.pagination import keyset_page
from infra.settings import Settings


def create(session: Session, owner_id: uuid.UUID, body: CollectionIn) -> Collection:
    collection = Collection(owner_id=owner_id, name=body.name, description=body.description)
    session.add(collection)
    session.flush()
    return collection


def list_owned(
    session: Session, owner_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[Collection], str | None]:
    query = select(Collection).where(Collection.owner_id == owner_id)
    return keyset_page(session, query, Collection, limit, cursor, descending=True)


def update(
    session: Session, owner_id: uuid.UUID, collection_id: uuid.UUID, body: CollectionPatch
) -> Collection:
    collection = owned_collection(session, owner_id, collection_id)
    for field in body.model_fields_set:
        setattr(collection, field, getattr(body, field))
    session.flush()
    return collection


def delete_owned(session: Session, settings: Settings, owner_id: uuid.UUID, collection_id: uuid.UUID) -> None:
    """Deletes the caller's collection and every project in it (404 for anyone else's)."""
    collection = owned_collection(session, owner_id, collection_id, lock="update")
    projects = select(Project.id).where(Project.collection_id == collection_id).with_for_update()
    delete_projects(session, settings, list(session.scalars(projects)), "collection deleted")
    session.delete(collection)
    session.flush()
