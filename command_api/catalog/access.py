"""Who may see and change what in the catalog.

- A collection is private to its owner.
- A project can be read by its owner and the users it is shared with; only the owner may
  change it (its name, copy, products, shares). A shared reader who tries gets 403.
- Anyone else gets 404 for everything, as if the object did not exist, so that ids do not
  reveal what exists. Administrators have no special catalog rights.
- An asset is private to its owner.
"""

from __future__ import annotations

import uuid

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from command_api.catalog.errors import ReadOnlyProject
from command_api.catalog.models import Asset, Collection, Project, ProjectShare
from command_api.problems import NotFound


def is_shared(session: Session, project_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    query = select(exists().where(ProjectShare.project_id == project_id, ProjectShare.user_id == user_id))
    return bool(session.scalar(query))


def readable_project(session: Session, user_id: uuid.UUID, project_id: uuid.UUID) -> Project:
    """The project if ``user_id`` owns it or it is shared with them; 404 otherwise."""
    project = session.get(Project, project_id)
    if project is None or (project.owner_id != user_id and not is_shared(session, project_id, user_id)):
        raise NotFound("project")
    return project


def owned_project(
    session: Session, user_id: uuid.UUID, project_id: uuid.UUID, *, lock: bool = False
) -> Project:
    """The project if ``user_id`` owns it; 403 for a shared reader; 404 for anyone else.
    ``lock`` takes a row lock (serialises changes to one project, e.g. its product count)."""
    project = session.get(Project, project_id, with_for_update=lock)
    if project is None:
        raise NotFound("project")
    if project.owner_id != user_id:
        if is_shared(session, project_id, user_id):
            raise ReadOnlyProject()
        raise NotFound("project")
    return project


def owned_collection(session: Session, user_id: uuid.UUID, collection_id: uuid.UUID) -> Collection:
    collection = session.get(Collection, collection_id)
    if collection is None or collection.owner_id != user_id:
        raise NotFound("collection")
    return collection


def owned_asset(session: Session, user_id: uuid.UUID, asset_id: uuid.UUID) -> Asset:
    asset = session.get(Asset, asset_id)
    if asset is None or asset.owner_id != user_id:
        raise NotFound("asset")
    return asset


def parse_id(value: uuid.UUID | str, what: str) -> uuid.UUID:
    """An id given as text (e.g. in a job request): not a UUID reads as not found."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(what) from None
