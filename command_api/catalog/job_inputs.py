"""What a generation job needs from the catalog, checked for the caller.

Called by POST /vto/jobs before anything is charged."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from command_api.catalog.access import contributable_project, owned_asset, parse_id
from command_api.catalog.errors import NoProducts, WrongAssetType
from command_api.catalog.models import Asset, Product
from command_api.problems import NotFound


def _image(obj: Product | Asset) -> dict[str, Any]:
    return {
        "id": str(obj.id),
        "storage_key": obj.storage_key,
        "media_type": obj.media_type,
        "width": obj.width,
        "height": obj.height,
    }


def _asset(session: Session, user_id: uuid.UUID, asset_id: uuid.UUID | str, type_: str) -> dict[str, Any]:
    asset = owned_asset(session, user_id, parse_id(asset_id, "asset"))
    if asset.type != type_:
        raise WrongAssetType(f"asset {asset.id} is a {asset.type}, not a {type_}")
    return _image(asset)


def load_job_inputs(
    session: Session,
    user_id: uuid.UUID,
    project_id: uuid.UUID | str,
    product_ids: Sequence[uuid.UUID | str],
    model_asset_id: uuid.UUID | str,
    background_asset_id: uuid.UUID | str | None = None,
) -> dict[str, Any]:
    """The storage keys and facts of a job's inputs, JSON-ready (ids as text)::

        {"project_id": "...", "project_owner_id": "...",
         "products": [{"id", "category", "side", "storage_key", "media_type", "width", "height"}, ...],
         "model": {"id", "storage_key", "media_type", "width", "height"},
         "background": {...same...} or None}

    Products come in the order given (duplicates dropped). Rules: the caller owns the project
    or is one of its editors (a viewer may not order jobs into it: ``ReadOnlyProject``, 403);
    every product belongs to that project; the assets are the caller's own, of the right type
    (how many products a job takes is the request schema's rule). Raises ``NotFound`` (404)
    for a project, product or asset the caller may not use (or a malformed id), ``NoProducts``
    or ``WrongAssetType`` (422). Reads only; never commits."""
    project = contributable_project(session, user_id, parse_id(project_id, "project"))
    wanted = list(dict.fromkeys(parse_id(pid, "product") for pid in product_ids))
    if not wanted:
        raise NoProducts()
    rows = session.scalars(select(Product).where(Product.id.in_(wanted), Product.project_id == project.id))
    found = {p.id: p for p in rows}
    missing = [pid for pid in wanted if pid not in found]
    if missing:
        raise NotFound(f"product {missing[0]}")
    products = [
        {**_image(found[pid]), "category": found[pid].category, "side": found[pid].side} for pid in wanted
    ]
    return {
        "project_id": str(project.id),
        "project_owner_id": str(project.owner_id),
        "products": products,
        "model": _asset(session, user_id, model_asset_id, "model"),
        "background": (
            None
            if background_asset_id is None
            else _asset(session, user_id, background_asset_id, "background")
        ),
    }
