"""Soft-deleted users are removed for good by `run.py users-purge` once their undo window is past."""
from datetime import timedelta

from sqlalchemy import select, update

from helpers import run_cli
from web.core.db import utcnow
from web.core.tables import audit_events, users


async def test_users_purge_removes_only_users_deleted_long_enough_ago(db, database_url, make_user):
    old = await make_user(username="long.gone")
    recent = await make_user(username="just.gone")
    alive = await make_user(username="still.here")
    async with db.write() as conn:
        await conn.execute(update(users).where(users.c.id == old["id"]).values(deleted_at=utcnow() - timedelta(days=40)))
        await conn.execute(update(users).where(users.c.id == recent["id"]).values(deleted_at=utcnow() - timedelta(days=1)))
    result = run_cli("users-purge", "--older-than", "30d", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "Purged 1 users" in result.stderr
    async with db.read() as conn:
        left = set((await conn.execute(select(users.c.username))).scalars())
        purge = (await conn.execute(select(audit_events).where(audit_events.c.action == "purge"))).all()
    assert left == {recent["username"], alive["username"]}
    assert [(e.target_id, e.changes) for e in purge] == [(old["id"], {"username": ["long.gone", None]})]
