"""Every ORM model of the API, imported so that ``Base.metadata`` describes every catalog
table: Alembic's ``target_metadata`` (``migrations/env.py``), against which ``alembic check``
compares the migrated database. A new ``models`` module is added here (a test fails until it
is)."""

from __future__ import annotations

from command_api.catalog import models as catalog_models
from command_api.users import models as user_models
from infra.orm import Base

MODEL_MODULES = (catalog_models, user_models)
metadata = Base.metadata

__all__ = ["MODEL_MODULES", "metadata"]
