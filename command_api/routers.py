"""The list of area routers mounted under /api/v1 (one line per area)."""

from __future__ import annotations

from fastapi import APIRouter

from command_api.admin.endpoints import router as admin
from command_api.api_keys.endpoints import router as api_keys
from command_api.assets.endpoints import router as assets
from command_api.auth.endpoints import router as auth
from command_api.billing.endpoints import admin_router as admin_billing
from command_api.billing.endpoints import router as billing
from command_api.collections.endpoints import router as collections
from command_api.files.endpoints import router as files
from command_api.points.endpoints import router as points
from command_api.products.endpoints import router as products
from command_api.projects.endpoints import invitations_router as invitations
from command_api.projects.endpoints import router as projects
from command_api.users.endpoints import router as users
from command_api.vto.endpoints import router as vto
from command_api.webhooks.endpoints import router as webhooks

# Routes are matched in this order, one after the other: the areas that carry the load first.
ALL: list[APIRouter] = [
    vto,
    points,
    billing,
    files,
    auth,
    users,
    collections,
    projects,
    invitations,
    products,
    assets,
    admin,
    admin_billing,
    webhooks,
    api_keys,
]
