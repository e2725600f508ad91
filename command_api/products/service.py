"""Products: upload (owner and editors) and list (owner and every shared user). Never commits."""

from __future__ import annotations

import uuid
from typing import BinaryIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from command_api.catalog.access import contributable_project, readable_project
from command_api.catalog.errors import TooManyProducts
from command_api.catalog.images import check_image, read_limited
from command_api.catalog.media import store
from command_api.catalog.models import Product
from command_api.pagination import keyset_page
from infra.storage import Storage

MAX_PRODUCTS_PER_PROJECT = 200


def add(
    session: Session,
    storage: Storage,
    user_id: uuid.UUID,
    project_id: uuid.UUID,
    upload: BinaryIO,
    *,
    max_bytes: int,
    category: str,
    side: str,
    name: str | None,
) -> Product:
    """Checks access first (so strangers learn nothing from upload errors), then the image;
    stores the bytes and adds the row. The project row is locked for the count check.
    The owner and editors add products; a viewer gets ``ReadOnlyProject`` (403)."""
    contributable_project(session, user_id, project_id, lock=True)
    image = check_image(read_limited(upload, max_bytes))
    count = session.scalar(select(func.count()).select_from(Product).where(Product.project_id == project_id))
    if (count or 0) >= MAX_PRODUCTS_PER_PROJECT:
        raise TooManyProducts(f"a project holds at most {MAX_PRODUCTS_PER_PROJECT} products")
    product_id = uuid.uuid4()
    product = Product(
        id=product_id,
        project_id=project_id,
        category=category,
        side=side,
        name=name,
        **store(storage, "products", product_id, image),
    )
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
