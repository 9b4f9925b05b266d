"""Counting attempts in the database, so that every worker sees the same back-off.

An attempt is counted before it is checked, in the write transaction that reads the lock
(`reserve`): parallel guesses cannot all pass the check before any of them is counted.
After `free` failures within `window` seconds a key is locked, for 15 s at first and twice
as long at each further failure, never longer than the window: a key is never locked out
for good. An attempt that turns out right is given back (`forgive`).
"""
import hashlib
import math
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..core.db import utcnow
from ..core.tables import login_throttle

FIRST_LOCK_SECONDS = 15
KEY_MAX = 300  # login_throttle.key


def name_key(identifier: str) -> str:
    """The key of a login name that names no account: always short enough to store."""
    key = f"name:{identifier.strip().lower()}"
    return key if len(key) <= 100 else "name#" + hashlib.sha256(key.encode()).hexdigest()


async def seconds_to_wait(conn, keys: list[str], now: datetime | None = None) -> int:
    """How long until none of these keys is locked; 0 when none is."""
    now = now or utcnow()
    query = select(login_throttle.c.locked_until).where(
        login_throttle.c.key.in_(keys), login_throttle.c.locked_until > now)
    latest = max((await conn.execute(query)).scalars(), default=None)
    return math.ceil((latest - now).total_seconds()) if latest else 0


async def _locked_rows(conn, keys: list[str], now: datetime) -> list:
    """The rows of `keys` (made if missing), locked until the transaction ends, in key order so
    that two transactions locking overlapping keys cannot deadlock."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    for key in sorted(set(keys)):
        await conn.execute(insert(login_throttle).values(
            key=key, failures=0, window_start=now).on_conflict_do_nothing())
    query = select(login_throttle).where(login_throttle.c.key.in_(keys)).order_by(login_throttle.c.key)
    return (await conn.execute(query.with_for_update())).all()


def _wait(rows, now: datetime) -> int:
    latest = max((r.locked_until for r in rows if r.locked_until and r.locked_until > now), default=None)
    return math.ceil((latest - now).total_seconds()) if latest else 0


async def _count(conn, row, free: int, window: int, now: datetime) -> None:
    failures, start = row.failures + 1, row.window_start
    if start <= now - timedelta(seconds=window):
        failures, start = 1, now
    locked_until = None
    if failures >= free:
        lock = min(FIRST_LOCK_SECONDS * 2 ** (failures - free), window)
        locked_until = now + timedelta(seconds=lock)
    await conn.execute(update(login_throttle).where(login_throttle.c.key == row.key).values(
        failures=failures, window_start=start, locked_until=locked_until))


async def reserve(conn, keys: list[str], free: int, window: int, now: datetime | None = None) -> int:
    """Counts one attempt against every key, unless one of them is locked: then nothing is
    counted and the answer is the seconds to wait. 0 means the attempt may be checked."""
    now = now or utcnow()
    rows = await _locked_rows(conn, keys, now)
    if wait := _wait(rows, now):
        return wait
    for row in rows:
        await _count(conn, row, free, window, now)
    return 0


async def count_attempt(conn, key: str, free: int, window: int, now: datetime | None = None) -> None:
    """Counts one attempt against `key`, locked or not."""
    now = now or utcnow()
    for row in await _locked_rows(conn, [key], now):
        await _count(conn, row, free, window, now)


async def refund(conn, key: str, free: int) -> None:
    """Takes back one attempt reserved on `key` that was right after all (a shared key such as
    an address keeps its other failures); a lock that attempt set goes with it."""
    row = (await conn.execute(select(login_throttle).where(login_throttle.c.key == key).with_for_update())).first()
    if row is None or row.failures == 0:
        return
    failures = row.failures - 1
    await conn.execute(update(login_throttle).where(login_throttle.c.key == key).values(
        failures=failures, locked_until=row.locked_until if failures >= free else None))


async def take(conn, key: str, limit: int, window: int, now: datetime | None = None) -> int:
    """One of `limit` uses of `key` per fixed window (registrations per address): 0 when taken,
    else the seconds until the window ends. The row stays locked (locked_until) until then, so
    the purge keeps it."""
    now = now or utcnow()
    row = (await _locked_rows(conn, [key], now))[0]
    start, used = row.window_start, row.failures
    if start <= now - timedelta(seconds=window) or row.locked_until is None:
        start, used = now, 0
    ends = start + timedelta(seconds=window)
    if used >= limit:
        return math.ceil((ends - now).total_seconds())
    await conn.execute(update(login_throttle).where(login_throttle.c.key == key).values(
        failures=used + 1, window_start=start, locked_until=ends))
    return 0


async def clear(conn, key: str) -> None:
    await conn.execute(delete(login_throttle).where(login_throttle.c.key == key))
