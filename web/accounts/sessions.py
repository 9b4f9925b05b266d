"""Server-side sessions: the cookie carries a random token, the table its sha256.

Ending a session deletes its row, so a copied cookie dies with it.
"""
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from quart import current_app, g, request
from quart_auth import current_user, logout_user
from sqlalchemy import bindparam, delete, insert, select, update

from ..core.db import utcnow
from ..core.tables import ROLES, sessions, users

# Every signed-in request reads its session row, joined with its user, and trusts nothing it
# read before: a logout, an ended session, a deactivation or a lower role take effect at the
# very next request, whichever worker or host serves it. Only the write that keeps a session
# alive is spared: last_seen_at moves at most once per TOUCH_EVERY.
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class CurrentUser:
    id: int
    username: str
    email: str
    role: str
    session_id: str
    remember: bool
    email_confirmed: bool  # the banner on every page asks for it until it is
    theme: str = "system"  # the person's preferences, on <html> of every page (base.html)
    single_key_shortcuts: bool = True


def session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start(conn, user_id: int, remember: bool, user_agent: str, ip: str, config) -> str:
    """A new session for a login; returns the token for the cookie (256 random bits)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    lifetime = config.remember_absolute if remember else config.session_absolute
    await conn.execute(insert(sessions).values(
        id=session_id(token), user_id=user_id, remember=remember, created_at=now,
        last_seen_at=now, expires_at=now + timedelta(seconds=lifetime),
        user_agent=user_agent[:255], ip=ip[:45],
        reauthenticated_at=now,  # a login is the freshest proof there is (reauthentication.py)
    ))
    return token


# Built once: SQLAlchemy then reuses its compiled form without working out a cache key.
SESSION_USER = (
    select(users.c.id, users.c.username, users.c.email, users.c.role, users.c.email_confirmed_at,
           users.c.theme, users.c.single_key_shortcuts, sessions.c.remember, sessions.c.last_seen_at)
    .join(users, users.c.id == sessions.c.user_id)
    .where(sessions.c.id == bindparam("sid"), sessions.c.expires_at > bindparam("now"),
           users.c.active.is_(True), users.c.deleted_at.is_(None))
)


async def load(db, token: str, config) -> CurrentUser | None:
    """The active user behind a session token, or None; keeps the session alive."""
    sid, now = session_id(token), utcnow()
    async with db.quick() as conn:
        row = (await conn.execute(SESSION_USER, {"sid": sid, "now": now})).first()
    if row is None:
        return None
    idle = config.remember_idle if row.remember else config.session_idle
    if row.last_seen_at <= now - timedelta(seconds=idle):
        return None
    if row.last_seen_at <= now - TOUCH_EVERY:
        async with db.write() as conn:
            await conn.execute(update(sessions).where(sessions.c.id == sid).values(last_seen_at=now))
    return CurrentUser(row.id, row.username, row.email, row.role, sid, row.remember,
                       row.email_confirmed_at is not None, row.theme, row.single_key_shortcuts)


async def end(conn, sid: str, user_id: int) -> int:
    result = await conn.execute(delete(sessions).where(sessions.c.id == sid, sessions.c.user_id == user_id))
    return result.rowcount


async def end_others(conn, user_id: int, keep_sid: str | None) -> int:
    query = delete(sessions).where(sessions.c.user_id == user_id)
    if keep_sid is not None:
        query = query.where(sessions.c.id != keep_sid)
    return (await conn.execute(query)).rowcount


async def end_all(conn, user_id: int) -> int:
    return await end_others(conn, user_id, keep_sid=None)


def revokes(changes: dict) -> bool:
    """Whether a change to an account (audit changes, {field: [old, new]}) takes rights away:
    a deactivation, a deletion or a lower role. Such a change ends the account's sessions for
    good, so that undoing it later revives none of them (nor a stolen cookie)."""
    if changes.get("active") == [True, False] or changes.get("deleted") == [False, True]:
        return True
    old, new = changes.get("role", (None, None))
    return old in ROLES and new in ROLES and ROLES.index(new) > ROLES.index(old)


async def list_for(conn, user_id: int):
    now = utcnow()
    query = (select(sessions).where(sessions.c.user_id == user_id, sessions.c.expires_at > now)
             .order_by(sessions.c.last_seen_at.desc()))
    return (await conn.execute(query)).all()


async def load_user():
    """g.user: who this request comes from (None for a visitor), from its session cookie."""
    g.user = None
    if request.endpoint == "static":
        return
    token = current_user.auth_id
    if token:
        g.user = await load(current_app.db, token, current_app.config["GATEHOUSE"])
        if g.user is None:
            logout_user()  # the session is over: drop the stale cookie


async def reauthenticated_at(conn, sid: str):
    """When the owner of this session last proved it is them (None: not since it began)."""
    return (await conn.execute(select(sessions.c.reauthenticated_at).where(sessions.c.id == sid))).scalar()


async def mark_reauthenticated(conn, sid: str, now) -> None:
    await conn.execute(update(sessions).where(sessions.c.id == sid).values(reauthenticated_at=now))
