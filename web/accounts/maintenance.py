"""Keeping the accounts' tables bounded: sessions past their lifetime, throttle counts past
their window and mailed links past their expiry are deleted, by `run.py purge-expired` and by a task in every worker.

Deletes go in small batches, each its own short write transaction, so logins and saves
never queue long behind them; on PostgreSQL several workers purging at once skip each
other's rows (SKIP LOCKED) instead of waiting for them.
"""
import asyncio
import random
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select

from ..core.background import in_every_worker
from ..core.db import utcnow
from ..core.tables import account_tokens, login_challenges, login_throttle, passkey_challenges, sessions

BATCH = 500
EVERY_SECONDS = 600  # on average; each worker waits a random share more or less


def dead_sessions(config, now: datetime):
    """Sessions past their absolute lifetime or idle for longer than their kind allows."""
    return or_(
        sessions.c.expires_at <= now,
        and_(sessions.c.remember.is_(False), sessions.c.last_seen_at <= now - timedelta(seconds=config.session_idle)),
        and_(sessions.c.remember.is_(True), sessions.c.last_seen_at <= now - timedelta(seconds=config.remember_idle)),
    )


def stale_counts(config, now: datetime):
    """Throttle rows whose window is over and that lock nothing: a new failure starts afresh."""
    return and_(login_throttle.c.window_start <= now - timedelta(seconds=config.throttle_window),
                or_(login_throttle.c.locked_until.is_(None), login_throttle.c.locked_until <= now))


async def _delete_batch(db, key_column, condition, batch: int) -> int:
    async with db.write() as conn:
        chosen = select(key_column).where(condition).limit(batch)
        if not db.is_sqlite:
            chosen = chosen.with_for_update(skip_locked=True)
        return (await conn.execute(delete(key_column.table).where(key_column.in_(chosen.scalar_subquery())))).rowcount


async def purge(db, config, now: datetime | None = None, batch: int = BATCH) -> dict[str, int]:
    """Deletes every dead session, stale throttle row and expired token as of `now`; returns
    how many of each."""
    now = now or utcnow()
    removed = {}
    for name, column, condition in (("sessions", sessions.c.id, dead_sessions(config, now)),
                                    ("login_throttle", login_throttle.c.key, stale_counts(config, now)),
                                    ("account_tokens", account_tokens.c.id, account_tokens.c.expires_at <= now),
                                    ("passkey_challenges", passkey_challenges.c.id, passkey_challenges.c.expires_at <= now),
                                    ("login_challenges", login_challenges.c.id, login_challenges.c.expires_at <= now)):
        removed[name] = 0
        while (count := await _delete_batch(db, column, condition, batch)) > 0:
            removed[name] += count
            if count < batch:
                break
    return removed


async def purge_forever(db, config, logger, stopping: asyncio.Event) -> None:
    """The worker's task: wait between half and one and a half EVERY_SECONDS, so that workers
    started together do not purge together, then purge; until `stopping` is set. It is never
    cancelled in the middle of a purge: a transaction cut off by a cancellation cannot be
    rolled back cleanly by the database driver."""
    while True:
        try:
            await asyncio.wait_for(stopping.wait(), EVERY_SECONDS * random.uniform(0.5, 1.5))
            return
        except TimeoutError:
            pass
        try:
            await purge(db, config)
        except Exception:  # a database that is briefly away must not end the task for good
            logger.exception("purging expired sessions and throttle rows failed")


def init_app(app) -> None:
    in_every_worker(app, "purging", lambda stopping: purge_forever(app.db, app.config["GATEHOUSE"], app.logger, stopping))
