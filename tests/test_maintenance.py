"""Bounded tables: sessions past their lifetime and throttle counts past their window are
purged, by `run.py purge-expired` and by a task every worker starts; live rows stay."""
import asyncio
from datetime import timedelta

from sqlalchemy import insert, select

from conftest import make_config
from helpers import rows, run_cli
from web import create_app
from web.accounts import maintenance
from web.core.db import utcnow
from web.core.tables import login_throttle, sessions


async def add_session(db, sid, user_id, *, remember=False, created, last_seen, expires):
    async with db.write() as conn:
        await conn.execute(insert(sessions).values(
            id=sid, user_id=user_id, remember=remember, created_at=created, last_seen_at=last_seen,
            expires_at=expires))


async def add_count(db, key, *, window_start, locked_until=None, failures=1):
    async with db.write() as conn:
        await conn.execute(insert(login_throttle).values(
            key=key, failures=failures, window_start=window_start, locked_until=locked_until))


async def session_ids(db):
    return {row.id for row in await rows(db, select(sessions.c.id))}


async def throttle_keys(db):
    return {row.key for row in await rows(db, select(login_throttle.c.key))}


async def test_purge_keeps_exactly_the_live_sessions(db, make_user, config):
    user = await make_user()
    now = utcnow()
    hour, day = timedelta(hours=1), timedelta(days=1)
    await add_session(db, "live", user["id"], created=now - hour, last_seen=now - timedelta(minutes=5), expires=now + hour)
    await add_session(db, "live-remembered", user["id"], remember=True, created=now - 3 * day,
                      last_seen=now - 3 * day, expires=now + 20 * day)
    await add_session(db, "past-absolute", user["id"], created=now - 13 * hour, last_seen=now - timedelta(minutes=1),
                      expires=now - timedelta(seconds=1))
    await add_session(db, "idle", user["id"], created=now - 3 * hour, last_seen=now - 2 * hour - timedelta(seconds=1),
                      expires=now + 9 * hour)
    await add_session(db, "idle-remembered", user["id"], remember=True, created=now - 20 * day,
                      last_seen=now - 15 * day, expires=now + 10 * day)

    removed = await maintenance.purge(db, config, now=now)

    assert await session_ids(db) == {"live", "live-remembered"}
    assert removed["sessions"] == 3


async def test_purge_keeps_exactly_the_throttle_rows_that_still_count(db, config):
    now = utcnow()
    window = timedelta(seconds=config.throttle_window)
    await add_count(db, "ip:in-window", window_start=now - window + timedelta(seconds=5))
    await add_count(db, "ip:locked", window_start=now - window - timedelta(seconds=1), failures=9,
                    locked_until=now + timedelta(seconds=30))
    await add_count(db, "ip:over", window_start=now - window - timedelta(seconds=1))
    await add_count(db, "ip:over-and-unlocked", window_start=now - 2 * window, failures=7,
                    locked_until=now - timedelta(seconds=1))

    removed = await maintenance.purge(db, config, now=now)

    assert await throttle_keys(db) == {"ip:in-window", "ip:locked"}
    assert removed["login_throttle"] == 2


async def test_purge_works_through_many_batches(db, make_user, config):
    user = await make_user()
    now = utcnow()
    async with db.write() as conn:
        await conn.execute(insert(sessions), [
            {"id": f"old{n}", "user_id": user["id"], "remember": False, "created_at": now - timedelta(days=1),
             "last_seen_at": now - timedelta(days=1), "expires_at": now - timedelta(hours=1)} for n in range(25)])
    await add_session(db, "live", user["id"], created=now, last_seen=now, expires=now + timedelta(hours=1))

    removed = await maintenance.purge(db, config, now=now, batch=4)

    assert removed["sessions"] == 25
    assert await session_ids(db) == {"live"}


async def test_every_worker_purges_in_the_background_while_it_serves(db, make_user, database_url, monkeypatch):
    user = await make_user()
    now = utcnow()
    await add_session(db, "dead", user["id"], created=now - timedelta(days=1), last_seen=now - timedelta(days=1),
                      expires=now - timedelta(hours=1))
    purges = []
    real_purge = maintenance.purge

    async def purge_and_count(*args, **kwargs):
        purges.append(await real_purge(*args, **kwargs))
    monkeypatch.setattr(maintenance, "purge", purge_and_count)
    monkeypatch.setattr(maintenance, "EVERY_SECONDS", 0.01)

    app = create_app(make_config(database_url))
    async def first_purge():
        while not purges:
            assert not app.purging.done(), app.purging
            await asyncio.sleep(0.01)
    async with app.test_app():  # runs before_serving, and after_serving on the way out
        await asyncio.wait_for(first_purge(), timeout=60)
    assert app.purging.done() and app.purging.exception() is None  # stopped, not cut off
    assert purges[0]["sessions"] == 1
    assert await session_ids(db) == set()


def test_purge_expired_command_reports_what_it_removed(database_url):
    result = run_cli("purge-expired", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "expired sessions" in result.stderr
