"""Products: add (owner and editors; the image already checked and stored:
``command_api.catalog.uploads``), list (owner and every shared user), delete (owner). Never
commits."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from command_api.catalog.access import contributable_project, owned_project, readable_project
from command_api.catalog.deletion import erase_later
from command_api.catalog.errors import TooManyProducts
from command_api.catalog.models import Product
from command_api.pagination import keyset_page
from command_api.problems import NotFound
from infra.settings import Settings

MAX_PRODUCTS_PER_PROJECT = 200


def check_can_add(session: Session, user_id: uuid.UUID, project_id: uuid.UUID) -> None:
    """Before an upload is decoded: the caller may add to the project (strangers learn nothing
    from upload errors: 404; a viewer gets ``ReadOnlyProject``, 403) and it has room left."""
    contributable_project(session, user_id, project_id)
    _check_room(session, project_id)


def _check_room(session: Session, project_id: uuid.UUID) -> None:
    count = session.scalar(select(func.count()).select_from(Product).where(Product.project_id == project_id))
    if (count or 0) >= MAX_PRODUCTS_PER_PROJECT:
        raise TooManyProducts(f"a project holds at most {MAX_PRODUCTS_PER_PROJECT} products")


def add(
    session: Session,
    user_id: uuid.UUID,
    project_id: uuid.UUID,
    product_id: uuid.UUID,
    stored: dict[str, Any],
    *,
    category: str,
    side: str,
    name: str | None,
) -> Product:
    """The row of a product image stored as ``stored`` (``catalog.media.store``'s columns).
    Access is checked again under a row lock of the project (the role may have changed while
    the image decoded), which also serialises the count check. The owner and editors add
    products; a viewer gets ``ReadOnlyProject`` (403)."""
    contributable_project(session, user_id, project_id, lock=True)
    _check_room(session, project_id)
    product = Product(id=product_id, project_id=project_id, category=category, side=side, name=name, **stored)
    session.add(product)
    session.flush()
    return product


def of_projects(session: Session, project_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Product]]:
    """Every product of these projects, in upload order."""
    found: dict[uuid.UUID, list[Product]] = {pid: [] for pid in project_ids}
    if not project_ids:
        return found
    query = (
        select(Product).where(Product.project_id.in_(project_ids)).order_by(Product.created_at, Product.id)
    )
    for product in session.scalars(query):
        found[product.project_id].append(product)
    return found


def list_readable(
    session: Session, user_id: uuid.UUID, project_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[Product], str | None]:
    readable_project(session, user_id, project_id)
    query = select(Product).where(Product.project_id == project_id)
    return keyset_page(session, query, Product, limit, cursor, descending=False)


def delete_from_project(
    session: Session, settings: Settings, user_id: uuid.UUID, project_id: uuid.UUID, product_id: uuid.UUID
) -> None:
    """The project's owner deletes one of its products (editors and viewers: 403; anyone
    else: 404); its object is erased once no job ordered before can need it."""
    owned_project(session, user_id, project_id, lock=True)
    key = session.scalar(
        delete(Product)
        .where(Product.id == product_id, Product.project_id == project_id)
        .returning(Product.storage_key)
    )
    if key is None:
        raise NotFound("product")
    erase_later(session, settings, [key], "product deleted")
