"""Counting failures in the database, so that every worker sees the same back-off.

After `free` failures within `window` seconds a key is locked, for 15 s at first and
twice as long at each further failure, never longer than the window: a key is never
locked out for good.
"""
import math
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..core.db import utcnow
from ..core.tables import login_throttle

FIRST_LOCK_SECONDS = 15


async def seconds_to_wait(conn, keys: list[str]) -> int:
    """How long until none of these keys is locked; 0 when none is."""
    now = utcnow()
    query = select(login_throttle.c.locked_until).where(
        login_throttle.c.key.in_(keys), login_throttle.c.locked_until > now)
    latest = max((await conn.execute(query)).scalars(), default=None)
    return math.ceil((latest - now).total_seconds()) if latest else 0


async def count_attempt(conn, key: str, free: int, window: int) -> None:
    now = utcnow()
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    await conn.execute(insert(login_throttle).values(
        key=key, failures=0, window_start=now).on_conflict_do_nothing())
    row = (await conn.execute(
        select(login_throttle).where(login_throttle.c.key == key).with_for_update())).one()
    failures, start = row.failures + 1, row.window_start
    if start <= now - timedelta(seconds=window):
        failures, start = 1, now
    locked_until = None
    if failures >= free:
        lock = min(FIRST_LOCK_SECONDS * 2 ** (failures - free), window)
        locked_until = now + timedelta(seconds=lock)
    await conn.execute(update(login_throttle).where(login_throttle.c.key == key).values(
        failures=failures, window_start=start, locked_until=locked_until))


async def clear(conn, key: str) -> None:
    await conn.execute(delete(login_throttle).where(login_throttle.c.key == key))
