"""A PostgreSQL database made for one benchmark run and dropped after it, whatever happens."""
import os
import secrets
from contextlib import asynccontextmanager

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Byte order, as SQLite sorts: for benchmarks whose pages both databases must list alike.
C_COLLATION = " LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0"


async def admin(statement: str) -> None:
    import asyncpg
    connection = await asyncpg.connect(ADMIN_URL)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def create(prefix: str, c_collation: bool = False) -> tuple[str, str]:
    """A new, empty database: (its name, its SQLAlchemy URL)."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    await admin(f'CREATE DATABASE "{name}"' + (C_COLLATION if c_collation else ""))
    return name, f"postgresql+asyncpg://{ADMIN_URL.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"


async def drop(name: str) -> None:
    await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def postgres(prefix: str, c_collation: bool = False):
    """create(), yielding the URL; dropped on the way out."""
    name, url = await create(prefix, c_collation)
    try:
        yield url
    finally:
        await drop(name)
