"""The live feature's reads and writes: events after a chain position, the people behind open
streams, and presence rows."""
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from ..core.tables import audit_chain, audit_events, live_presence, sessions, users

EVENT = (audit_events.c.chain_position, audit_events.c.occurred_at, audit_events.c.actor_id,
         audit_events.c.actor_name, audit_events.c.action, audit_events.c.target_type,
         audit_events.c.target_id, audit_events.c.target_name, audit_events.c.chain_hash)


# Built once: every signed-in page reads it, and a statement object keeps its cache key.
HEAD = select(audit_chain.c.position, audit_chain.c.checkpoint_position).where(audit_chain.c.id == 1)


async def head(conn) -> tuple[int, int]:
    """(the chain head's position, the last position pruned away): (0, 0) before any event."""
    row = (await conn.execute(HEAD)).first()
    return (row.position, row.checkpoint_position) if row else (0, 0)


async def mark(conn, position: int) -> str | None:
    """The chain hash at `position`, which tells this chain from another one grown as long (a
    database restored or replaced): None when there is no such place any more."""
    found = (await conn.execute(select(audit_events.c.chain_hash)
                                .where(audit_events.c.chain_position == position))).scalar()
    if found is None:  # pruned up to there, or the empty chain
        found = (await conn.execute(select(audit_chain.c.checkpoint_hash).where(
            audit_chain.c.id == 1, audit_chain.c.checkpoint_position == position))).scalar()
    return "" if found is None and position == 0 else found


async def events_after(conn, position: int, limit: int):
    """Sealed events after `position`, in chain order. By position, not id: an id is taken at
    insert, a position at commit, so a transaction that inserted first and commits last has the
    lower id and the higher position; reading by id would skip it for good."""
    return (await conn.execute(select(*EVENT).where(audit_events.c.chain_position > position)
                               .order_by(audit_events.c.chain_position).limit(limit))).all()


async def holders(conn, session_ids, now: datetime, config) -> dict[str, tuple[int, str]]:
    """{session id: (user id, role)} for the sessions among `session_ids` still alive, by the
    rules every request's check applies (web/accounts/sessions.py load)."""
    rows = (await conn.execute(
        select(sessions.c.id, sessions.c.remember, sessions.c.last_seen_at, users.c.id.label("user_id"), users.c.role)
        .join(users, users.c.id == sessions.c.user_id)
        .where(sessions.c.id.in_(list(session_ids)), sessions.c.expires_at > now,
               users.c.active.is_(True), users.c.deleted_at.is_(None)))).all()
    alive = {}
    for row in rows:
        idle = config.remember_idle if row.remember else config.session_idle
        if row.last_seen_at > now - timedelta(seconds=idle):
            alive[row.id] = (row.user_id, row.role)
    return alive


async def user_exists(conn, user_id: int) -> bool:
    return (await conn.execute(select(users.c.id).where(users.c.id == user_id, users.c.deleted_at.is_(None)))).first() is not None


async def announce(conn, user_id: int, editor_id: int, expires_at: datetime) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(live_presence).values(user_id=user_id, editor_id=editor_id, expires_at=expires_at)
    await conn.execute(insert.on_conflict_do_update(index_elements=["user_id", "editor_id"],
                                                    set_={"expires_at": expires_at}))


async def withdraw(conn, user_id: int, editor_id: int) -> None:
    await conn.execute(delete(live_presence).where(live_presence.c.user_id == user_id,
                                                   live_presence.c.editor_id == editor_id))


async def expire(conn, now: datetime):
    """Deletes the presence rows past their time; returns them with their editors' names."""
    gone = (await conn.execute(delete(live_presence).where(live_presence.c.expires_at <= now)
                               .returning(live_presence.c.user_id, live_presence.c.editor_id))).all()
    if not gone:
        return []
    names = dict((await conn.execute(select(users.c.id, users.c.username)
                                     .where(users.c.id.in_({row.editor_id for row in gone})))).all())
    return [(row.user_id, row.editor_id, names.get(row.editor_id, "")) for row in gone]
