"""The ``vto`` command line."""

from __future__ import annotations

import typer

from infra.database import database_url
from infra.migrate import upgrade
from infra.settings import get_settings

app = typer.Typer(
    help="VTO backend: try-on generation with an event-sourced point ledger.", no_args_is_help=True
)


@app.command()
def migrate(revision: str = typer.Argument("head", help="Alembic revision to upgrade to.")) -> None:
    """Apply the database migrations (to VTO_DATABASE_URL, or the embedded PostgreSQL)."""
    upgrade(database_url(get_settings()), revision)
    typer.echo(f"database migrated to {revision}")


def main() -> None:
    app()
