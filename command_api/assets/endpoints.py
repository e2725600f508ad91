"""POST /assets (multipart upload), GET /assets, GET /assets/{id} (owner only)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile

from command_api.assets import service
from command_api.assets.schemas import AssetOut, AssetType
from command_api.catalog.access import owned_asset
from command_api.catalog.fields import Name
from command_api.catalog.responses import CURSOR, INVALID, NOT_FOUND, UPLOAD, problems
from command_api.deps import CurrentUser, SessionDep, SettingsDep, SignerDep, StorageDep
from command_api.pagination import Cursor, Limit, Page

router = APIRouter(prefix="/assets", tags=["assets"])


@router.post(
    "",
    status_code=201,
    summary="Upload a model photo or a background (PNG, JPEG or WebP)",
    responses=problems(INVALID, UPLOAD),
)
def upload_asset(
    file: Annotated[UploadFile, File(description="The image: PNG, JPEG or WebP, 64..8192 px a side")],
    type: Annotated[AssetType, Form(description="model (a person photo) or background")],
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    sign: SignerDep,
    name: Annotated[Name | None, Form(description="A label for the asset")] = None,
) -> AssetOut:
    asset = service.add(
        session,
        storage,
        user.id,
        file.file,
        max_bytes=settings.max_upload_bytes,
        type_=type.value,
        name=name,
    )
    return AssetOut.of(asset, sign)


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
