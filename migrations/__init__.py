"""Alembic migrations: they own every table (event store, read models, catalog); the schema
is documented in ``migrations/README.md``. May import ``infra`` (the database URL) and, in
``env.py``, the API's ORM models (``command_api.models``: Alembic's ``target_metadata``)."""
