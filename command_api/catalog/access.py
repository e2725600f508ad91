"""Who may see and change what in the catalog.

- A collection is private to its owner.
- A project is shared with a user as a ``viewer`` (the default) or an ``editor``
  (``ShareRole``):

  | caller | read project, products, results | add products, order jobs | change project, shares |
  |--------|---------------------------------|--------------------------|------------------------|
  | owner  | yes                             | yes                      | yes                    |
  | editor | yes                             | yes (1)                  | 403                    |
  | viewer | yes                             | 403 ``ReadOnlyProject``  | 403                    |

  (1) an editor's jobs are charged to the editor and their results land in the project's
  gallery (and counts), as the owner's do. A shared user may still remove their own share
  (leave the project).
- Anyone else gets 404 for everything, as if the object did not exist, so that ids do not
  reveal what exists. Administrators have no special catalog rights.
- An asset is private to its owner (a job uses the caller's own assets, even in another's
  project).
"""

from __future__ import annotations

import uuid
from typing import Literal

from sqlalchemy import Connection, exists, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import ForUpdateParameter

from command_api.catalog.errors import NotProjectOwner, ReadOnlyProject
from command_api.catalog.models import Asset, Collection, Project, ProjectShare, ShareRole
from command_api.problems import NotFound


def share_role(session: Session, project_id: uuid.UUID, user_id: uuid.UUID) -> ShareRole | None:
    """The role the project is shared with ``user_id`` as; None when it is not shared."""
    query = select(ProjectShare.role).where(
        ProjectShare.project_id == project_id, ProjectShare.user_id == user_id
    )
    role = session.scalar(query)
    return None if role is None else ShareRole(role)


def is_shared(session: Session, project_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    query = select(exists().where(ProjectShare.project_id == project_id, ProjectShare.user_id == user_id))
    return bool(session.scalar(query))


def readable_project_id(
    conn: Session | Connection, user_id: uuid.UUID, project_id: uuid.UUID | str | None
) -> bool:
    """Whether ``user_id`` owns the project or it is shared with them (one Core query)."""
    try:
        project = parse_id(project_id or "", "project")
    except NotFound:
        return False
    shared = exists().where(ProjectShare.project_id == project, ProjectShare.user_id == user_id)
    query = select(exists().where(Project.id == project, or_(Project.owner_id == user_id, shared)))
    return bool(conn.scalar(query))


def readable_project(session: Session, user_id: uuid.UUID, project_id: uuid.UUID) -> Project:
    """The project if ``user_id`` owns it or it is shared with them (any role); 404 otherwise."""
    project = session.get(Project, project_id)
    if project is None or (project.owner_id != user_id and not is_shared(session, project_id, user_id)):
        raise NotFound("project")
    return project


def _project(
    session: Session, user_id: uuid.UUID, project_id: uuid.UUID, lock: bool
) -> tuple[Project, ShareRole | None]:
    """The project and the caller's share role (None for the owner); 404 when the caller is
    neither its owner nor shared on it."""
    project = session.get(Project, project_id, with_for_update=lock)
    if project is None:
        raise NotFound("project")
    if project.owner_id == user_id:
        return project, None
    role = share_role(session, project_id, user_id)
    if role is None:
        raise NotFound("project")
    return project, role


def contributable_project(
    session: Session, user_id: uuid.UUID, project_id: uuid.UUID, *, lock: bool = False
) -> Project:
    """The project if ``user_id`` owns it or is one of its editors: who may add products and
    order jobs in it. ``ReadOnlyProject`` (403) for a viewer; 404 for anyone else. ``lock``
    takes a row lock (serialises changes to one project, e.g. its product count)."""
    project, role = _project(session, user_id, project_id, lock)
    if role == ShareRole.VIEWER:
        raise ReadOnlyProject()
    return project


def owned_project(
    session: Session, user_id: uuid.UUID, project_id: uuid.UUID, *, lock: bool = False
) -> Project:
    """The project if ``user_id`` owns it: who may change it and its shares. 403 for a shared
    user (``ReadOnlyProject`` for a viewer, ``NotProjectOwner`` for an editor); 404 for anyone
    else. ``lock`` takes a row lock."""
    project, role = _project(session, user_id, project_id, lock)
    if role == ShareRole.VIEWER:
        raise ReadOnlyProject()
    if role == ShareRole.EDITOR:
        raise NotProjectOwner()
    return project


def owned_collection(
    session: Session,
    user_id: uuid.UUID,
    collection_id: uuid.UUID,
    *,
    lock: Literal["key_share", "update"] | None = None,
) -> Collection:
    """The collection if ``user_id`` owns it; 404 otherwise. ``lock``: ``key_share`` while a
    project is added to it, ``update`` while it is deleted (the two wait for each other, so a
    project is never added to a collection being deleted)."""
    modes: dict[str | None, ForUpdateParameter] = {None: None, "key_share": {"read": True, "key_share": True}}
    collection = session.get(Collection, collection_id, with_for_update=modes.get(lock, True))
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
