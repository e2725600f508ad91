"""Alembic migrations: they own every table (event store, read models, catalog); the schema
is documented in ``migrations/README.md``. May import ``infra`` (the database URL)."""
