"""POST /projects/{id}/products (multipart upload, owner or editor), GET /projects/{id}/products."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from command_api.catalog.fields import Name
from command_api.catalog.responses import CURSOR, INVALID, NOT_FOUND, READ_ONLY, UPLOAD, problems
from command_api.deps import CurrentUser, SessionDep, SettingsDep, SignerDep, StorageDep
from command_api.pagination import Cursor, Limit, Page
from command_api.products import service
from command_api.products.schemas import ProductOut
from generator_worker.generation import GarmentCategory, GarmentSide

router = APIRouter(prefix="/projects/{project_id}/products", tags=["products"])


@router.post(
    "",
    status_code=201,
    summary="Upload a product image (PNG, JPEG or WebP; the owner or an editor)",
    responses=problems(
        READ_ONLY,
        NOT_FOUND,
        INVALID,
        UPLOAD,
        {409: {"description": "the project already holds the most products it may (too_many_products)"}},
    ),
)
def upload_product(
    project_id: uuid.UUID,
    file: Annotated[UploadFile, File(description="The garment image: PNG, JPEG or WebP, 64..8192 px a side")],
    category: Annotated[GarmentCategory, Form(description="top, bottom, dress or outer")],
    side: Annotated[GarmentSide, Form(description="front or back")],
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    sign: SignerDep,
    name: Annotated[Name | None, Form(description="A label for the product")] = None,
) -> ProductOut:
    product = service.add(
        session,
        storage,
        user.id,
        project_id,
        file.file,
        max_bytes=settings.max_upload_bytes,
        category=category.value,
        side=side.value,
        name=name,
    )
    return ProductOut.of(product, sign)


@router.get(
    "", summary="A project's products, in upload order", responses=problems(NOT_FOUND, CURSOR, INVALID)
)
def list_products(
    project_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    sign: SignerDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ProductOut]:
    items, next_cursor = service.list_readable(session, user.id, project_id, limit, cursor)
    return Page[ProductOut](items=[ProductOut.of(p, sign) for p in items], next_cursor=next_cursor)
