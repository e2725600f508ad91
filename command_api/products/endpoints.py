"""POST /projects/{id}/products (multipart upload, owner or editor), GET /projects/{id}/products,
DELETE /projects/{id}/products/{id} (owner)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from sqlalchemy.orm import Session

from command_api.catalog import uploads
from command_api.catalog.fields import Name
from command_api.catalog.responses import CURSOR, INVALID, NOT_FOUND, READ_ONLY, UPLOAD, problems
from command_api.deps import BearerCredentials, CurrentUser, ServicesDep, SessionDep, SettingsDep, SignerDep
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
async def upload_product(
    request: Request,
    project_id: uuid.UUID,
    file: Annotated[UploadFile, File(description="The garment image: PNG, JPEG or WebP, 64..8192 px a side")],
    category: Annotated[GarmentCategory, Form(description="top, bottom, dress or outer")],
    side: Annotated[GarmentSide, Form(description="front or back")],
    services: ServicesDep,
    credentials: BearerCredentials,
    sign: SignerDep,
    name: Annotated[Name | None, Form(description="A label for the product")] = None,
) -> ProductOut:
    """Access is checked first; the image is then decoded and re-encoded outside any database
    connection or lock, in the process's bounded pool (``command_api.catalog.uploads``)."""
    limits = uploads.upload_limits(request, services)
    user_id = await uploads.caller(
        request, services, credentials, lambda session, uid: service.check_can_add(session, uid, project_id)
    )
    with limits.account_slot(user_id):
        image = await uploads.decode(limits, file.file, services.settings)

        def record(session: Session, product_id: uuid.UUID, stored: dict[str, Any]) -> ProductOut:
            product = service.add(
                session,
                user_id,
                project_id,
                product_id,
                stored,
                category=category.value,
                side=side.value,
                name=name,
            )
            return ProductOut.of(product, sign)

        return await uploads.store_and_record(request, services, "products", image, record)


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


@router.delete(
    "/{product_id}",
    status_code=204,
    summary="Delete a product (the project's owner; jobs that used it keep their outputs)",
    responses=problems(READ_ONLY, NOT_FOUND, INVALID),
)
def delete_product(
    project_id: uuid.UUID,
    product_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    service.delete_from_project(session, settings, user.id, project_id, product_id)
    return Response(status_code=204)
