"""Queries about user accounts, shared by registration, login, the profile, the CLI and the
admin table. Every write of the users table is here."""
from functools import cache

from sqlalchemy import bindparam, delete, func, insert, select, update

from ..core.db import utcnow
from ..core.tables import users
from . import passwords


async def count_users(conn) -> int:
    return (await conn.execute(select(func.count()).select_from(users))).scalar_one()


async def create_user(conn, username: str, email: str, password_hash: str, role: str,
                      active: bool = True, *, confirmed: bool = False) -> int:
    """A new account; `confirmed` when its address needs no confirming (made by an operator)."""
    now = utcnow()
    result = await conn.execute(insert(users).values(
        username=username, email=email, password_hash=password_hash, role=role,
        active=active, version=1, created_at=now, updated_at=now,
        email_confirmed_at=now if confirmed else None,
    ).returning(users.c.id))
    return result.scalar_one()


async def create_invited_user(conn, username: str, email: str, role: str) -> int:
    """An account waiting for its invitation to be accepted: no usable password yet."""
    now = utcnow()
    return (await conn.execute(insert(users).values(
        username=username, email=email, password_hash=passwords.UNUSABLE, role=role, active=True,
        version=1, created_at=now, updated_at=now, invited_at=now,
    ).returning(users.c.id))).scalar_one()


async def accept_invitation(conn, user_id: int, password_hash: str) -> None:
    """The invitee's own password: the account is usable, its address (the link came to it)
    confirmed."""
    now = utcnow()
    await update_user(conn, user_id, {"password_hash": password_hash, "invited_at": None,
                                      "email_confirmed_at": now})


async def confirm_email(conn, user_id: int, email: str) -> None:
    """`email` becomes the account's address, confirmed: the owner opened a link sent to it."""
    await update_user(conn, user_id, {"email": email, "email_confirmed_at": utcnow()})


async def username_taken(conn, username: str, except_id: int | None = None) -> bool:
    query = select(users.c.id).where(func.lower(users.c.username) == username.lower())
    if except_id is not None:
        query = query.where(users.c.id != except_id)
    return (await conn.execute(query)).first() is not None


async def email_taken(conn, email: str, except_id: int | None = None) -> bool:
    query = select(users.c.id).where(func.lower(users.c.email) == email.lower())
    if except_id is not None:
        query = query.where(users.c.id != except_id)
    return (await conn.execute(query)).first() is not None


async def find_by_login(conn, identifier: str):
    """The account a login identifier names: a username or an email, any case."""
    key = identifier.strip().lower()
    column = users.c.email if "@" in key else users.c.username
    query = select(users).where(func.lower(column) == key)
    return (await conn.execute(query)).first()


# Built once: SQLAlchemy then reuses its compiled form; a select of every column is not cheap
# to build, and most requests about one user start with this one.
USER_BY_ID = select(users).where(users.c.id == bindparam("user_id"))


async def get_user(conn, user_id: int):
    return (await conn.execute(USER_BY_ID, {"user_id": user_id})).first()


async def lock_user(conn, user_id: int):
    """The user's row as it is now, locked until the write transaction ends (SQLite: BEGIN
    IMMEDIATE already holds the write lock): a decision taken on it holds when the change is made."""
    return (await conn.execute(USER_BY_ID.with_for_update(), {"user_id": user_id})).first()


def changed(**values) -> dict:
    """`values` for an UPDATE of users that changes the account: its version moves on, so an
    editor holding the old version gets a conflict instead of overwriting."""
    return {**values, "updated_at": utcnow(), "version": users.c.version + 1}


async def set_password_hash(conn, user_id: int, password_hash: str) -> None:
    await conn.execute(update(users).where(users.c.id == user_id).values(**changed(password_hash=password_hash)))


async def update_user(conn, user_id: int, values: dict) -> None:
    await conn.execute(update(users).where(users.c.id == user_id).values(**changed(**values)))


async def set_preferences(conn, user_id: int, preferences: dict) -> None:
    """The owner's own settings (theme, shortcuts). The version stays: they are not the
    account's data an admin edits, so an editor open on this row has nothing to conflict with."""
    await conn.execute(update(users).where(users.c.id == user_id).values(**preferences))


async def soft_delete(conn, user_id: int) -> None:
    await update_user(conn, user_id, {"deleted_at": utcnow()})


async def restore(conn, user_id: int) -> None:
    await update_user(conn, user_id, {"deleted_at": None})


async def lock_live_users(conn, ids: list[int]) -> list:
    """The users with these ids that are not deleted, locked until the write transaction ends
    (PostgreSQL re-reads a row another transaction changed meanwhile: one deleted is left out)."""
    query = select(users).where(users.c.id.in_(ids), users.c.deleted_at.is_(None)).order_by(users.c.id)
    return (await conn.execute(query.with_for_update())).all()


async def record_login(conn, user_id: int) -> None:
    await conn.execute(update(users).where(users.c.id == user_id).values(last_login_at=utcnow()))


async def lock_active_admins(conn) -> list[int]:
    """Ids of the active Admins (an invitation not yet accepted makes none), locked until the transaction ends (SQLite: BEGIN IMMEDIATE
    already holds the write lock), so two Admins demoting each other cannot both succeed."""
    query = select(users.c.id).where(users.c.role == "Admin", users.c.active.is_(True),
                                     users.c.deleted_at.is_(None), users.c.invited_at.is_(None)).with_for_update()
    return list((await conn.execute(query)).scalars())


@cache
def _update_if_current(fields: tuple[str, ...]):
    """The UPDATE of these fields, built once: it runs inside the write lock every other writer
    waits for, where building it and its cache key cost more than running it."""
    return (update(users)
            .where(users.c.id == bindparam("row_id"), users.c.version == bindparam("row_version"),
                   users.c.deleted_at.is_(None))
            .values({**changed(**{field: bindparam(f"new_{field}") for field in fields}),
                     "updated_at": bindparam("new_updated_at")})
            .returning(*users.c))


async def update_if_current(conn, user_id: int, version: int, values: dict):
    """Applies `values` only if the row is still at `version` and returns the row as saved;
    None when someone was first."""
    parameters = {f"new_{field}": value for field, value in values.items()}
    result = await conn.execute(_update_if_current(tuple(sorted(values))), {
        **parameters, "row_id": user_id, "row_version": version, "new_updated_at": utcnow()})
    return result.first()


async def purge_deleted(conn, cutoff) -> list:
    """Removes for good the users soft-deleted before `cutoff` (their undo window is long
    past); returns (id, username) of each."""
    gone = (await conn.execute(select(users.c.id, users.c.username).where(
        users.c.deleted_at.is_not(None), users.c.deleted_at < cutoff))).all()
    if gone:
        await conn.execute(delete(users).where(users.c.id.in_([row.id for row in gone])))
    return gone
