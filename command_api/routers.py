"""The list of area routers mounted under /api/v1 (one line per area)."""

from __future__ import annotations

from fastapi import APIRouter

from command_api.admin.endpoints import router as admin
from command_api.points.endpoints import router as points

ALL: list[APIRouter] = [points, admin]
