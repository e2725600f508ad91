"""POST /assets (multipart upload), GET /assets, GET and DELETE /assets/{id} (owner only)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from sqlalchemy.orm import Session

from command_api.assets import service
from command_api.assets.schemas import AssetOut, AssetType
from command_api.catalog import uploads
from command_api.catalog.access import owned_asset
from command_api.catalog.fields import Name
from command_api.catalog.responses import CURSOR, INVALID, NOT_FOUND, UPLOAD, problems
from command_api.deps import BearerCredentials, CurrentUser, ServicesDep, SessionDep, SettingsDep, SignerDep
from command_api.pagination import Cursor, Limit, Page

router = APIRouter(prefix="/assets", tags=["assets"])


@router.post(
    "",
    status_code=201,
    summary="Upload a model photo or a background (PNG, JPEG or WebP)",
    responses=problems(INVALID, UPLOAD),
)
async def upload_asset(
    request: Request,
    file: Annotated[UploadFile, File(description="The image: PNG, JPEG or WebP, 64..8192 px a side")],
    type: Annotated[AssetType, Form(description="model (a person photo) or background")],
    services: ServicesDep,
    credentials: BearerCredentials,
    sign: SignerDep,
    name: Annotated[Name | None, Form(description="A label for the asset")] = None,
) -> AssetOut:
    """The image is decoded and re-encoded outside any database connection, in the process's
    bounded pool (``command_api.catalog.uploads``)."""
    limits = uploads.upload_limits(request, services)
    user_id = await uploads.caller(request, services, credentials)
    with limits.account_slot(user_id):
        image = await uploads.decode(limits, file.file, services.settings)

        def record(session: Session, asset_id: uuid.UUID, stored: dict[str, Any]) -> AssetOut:
            asset = service.add(session, user_id, asset_id, stored, type_=type.value, name=name)
            return AssetOut.of(asset, sign)

        return await uploads.store_and_record(request, services, "assets", image, record)


@router.get("", summary="The caller's assets, newest first", responses=problems(CURSOR, INVALID))
def list_assets(
    user: CurrentUser,
    session: SessionDep,
    sign: SignerDep,
    type: Annotated[AssetType | None, Query(description="Only this type")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AssetOut]:
    items, next_cursor = service.list_owned(session, user.id, type.value if type else None, limit, cursor)
    return Page[AssetOut](items=[AssetOut.of(a, sign) for a in items], next_cursor=next_cursor)


@router.get("/{asset_id}", summary="One of the caller's assets", responses=problems(NOT_FOUND, INVALID))
def get_asset(asset_id: uuid.UUID, user: CurrentUser, session: SessionDep, sign: SignerDep) -> AssetOut:
    return AssetOut.of(owned_asset(session, user.id, asset_id), sign)


@router.delete(
    "/{asset_id}",
    status_code=204,
    summary="Delete one of the caller's assets (jobs that used it keep their outputs)",
    responses=problems(NOT_FOUND, INVALID),
)
def delete_asset(
    asset_id: uuid.UUID, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Response:
    service.delete_owned(session, settings, user.id, asset_id)
    return Response(status_code=204)
