"""Alembic's environment for Gatehouse.

The app runs migrations itself (`Database.create_schema()`: `run.py init-db` and `serve`),
handing a connection in `config.attributes["connection"]`. Run from the command line
(`alembic upgrade head`, `alembic current`), the database comes from DATABASE_URL.
"""
import asyncio
import os

from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine

from web.core.schema import in_metadata
from web.core.tables import metadata

config = context.config
target_metadata = metadata


def run_with(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, include_name=in_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def run_from_url(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run_with)
    finally:
        await engine.dispose()


def main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with(connection)
        return
    if context.is_offline_mode():
        raise SystemExit("Offline (--sql) mode is not supported: run.py schema prints the SQL.")
    url = os.environ.get("DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("Set DATABASE_URL to the database to migrate.")
    asyncio.run(run_from_url(url))


main()
