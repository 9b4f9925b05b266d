"""Writing the audit trail: one row per event, in the caller's transaction."""
from typing import NamedTuple

from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select

from .db import utcnow
from .tables import audit_events


class Actor(NamedTuple):
    """Who did it, when that is not the signed-in user (a new registration, the CLI)."""
    id: int | None
    username: str


CLI = Actor(None, "run.py")


def diff(before: dict, after: dict) -> dict:
    """{field: [old, new]} for the fields whose value changed."""
    return {k: [before.get(k), after[k]] for k in after if before.get(k) != after[k]}


async def record(conn, action: str, target_type: str, target_id: int | None = None, *,
                 actor=None, changes: dict | None = None, ip: str = "") -> None:
    await conn.execute(insert(audit_events).values(
        occurred_at=utcnow(),
        actor_id=getattr(actor, "id", None),
        actor_name=getattr(actor, "username", "") or "",
        action=action,
        target_type=target_type,
        target_id=target_id,
        changes=changes,
        ip=ip or "",
    ))


async def prune(db, cutoff, batch: int = 5000, progress=None) -> int:
    """Deletes events older than `cutoff` in batches (short write locks), then records the prune."""
    removed = 0
    while True:
        async with db.write() as conn:
            ids = select(audit_events.c.id).where(audit_events.c.occurred_at < cutoff).limit(batch)
            count = (await conn.execute(delete(audit_events).where(
                audit_events.c.id.in_(ids.scalar_subquery())))).rowcount
        removed += count
        if progress:
            progress(removed)
        if count < batch:
            break
    async with db.write() as conn:
        await record(conn, "prune", "audit", None, actor=CLI,
                     changes={"removed": [None, removed], "older_than": [None, cutoff.isoformat(timespec="seconds")]})
    return removed
