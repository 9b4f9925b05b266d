"""Realistic fake users and audit events for development and benchmarks.

Loads go straight to the driver (SQLite executemany, PostgreSQL COPY) in few transactions:
through SQLAlchemy a million users took minutes (docs/PERFORMANCE.md, "A million users").
"""
import bisect
import json
import random
from contextlib import asynccontextmanager
from datetime import timedelta

from sqlalchemy import func, select, text, update
from sqlalchemy.schema import CreateIndex

from . import audit_trail
from .db import utcnow
from .schema import made_on
from .tables import ROLES, USERS_SEARCH_SQLITE, audit_chain, audit_events, users

FIRST = ("ada alan anna ben carla chen dana diego elena emil farah felix grace hana ivan "
         "jamal jana kai karin leo lena liam maria mateo mia nadia noah olga omar paula "
         "pedro quinn rosa sam sara sofia tariq tom uma victor wei yara yusuf zoe").split()
LAST = ("adams baker costa diaz evans fischer garcia haddad ito jensen kim kowalski lopez "
        "martin meyer nakamura novak okafor patel quint rossi santos schmidt silva tanaka "
        "usman varga wagner weber xu young zhang").split()
# Domains the app's own email check accepts (it refuses special-use names such as .test).
DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "corp.example.org")
USER_COLUMNS = ("username", "email", "password_hash", "role", "active", "version", "created_at", "updated_at",
                "email_confirmed_at", "last_login_at")
EVENT_COLUMNS = ("id", "occurred_at", "actor_id", "actor_name", "action", "target_type", "target_id",
                 "target_name", "changes", "ip", "chain_position", "chain_hash")
CHUNK = 50_000
# A load that at least doubles a table drops its indexes and builds them again at the end:
# maintaining them row by row (two trigram GIN indexes on PostgreSQL, six B-trees of random
# keys on SQLite) made a million users take minutes.
REBUILD_FROM = 0.5
LOAD_CACHE_KB = 256 * 1024  # SQLite's page cache, PostgreSQL's memory for building an index
# The trigram trigger costs ~0.1 ms a row on SQLite: a load indexes its rows in one statement.
SEARCH_INSERT_TRIGGER = USERS_SEARCH_SQLITE[1]


def role_for(rng: random.Random) -> str:
    roll = rng.random()
    return "Admin" if roll < 0.01 else "Manager" if roll < 0.10 else "Customer"


def fake_users(count: int, start: int, password_hash: str, seed: int = 42):
    rng = random.Random(seed + start)
    now = utcnow()
    for n in range(start, start + count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        created = now - timedelta(seconds=rng.randint(3600, 730 * 86400))
        seen = rng.random() < 0.8
        yield {
            "username": f"{first}.{last}{n}",
            "email": f"{first}.{last}{n}@{rng.choice(DOMAINS)}",
            "password_hash": password_hash,
            "role": role_for(rng),
            "active": rng.random() > 0.05,
            "version": 1,
            "created_at": created,
            "updated_at": created,
            "email_confirmed_at": created,
            "last_login_at": created + (now - created) * rng.random() if seen else None,
        }


def _stored(value, sqlite: bool):
    """A value as the driver takes it: SQLite holds times as SQLAlchemy writes them, and 0/1."""
    if not sqlite or value is None:
        return value
    if isinstance(value, bool):
        return int(value)
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ", timespec="microseconds")
    return value


def _chunks(rows, size: int):
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _driver(conn):
    return (await conn.get_raw_connection()).driver_connection


async def _copy(conn, db, table: str, columns, rows) -> None:
    """Writes `rows` (tuples in `columns` order) in `conn`'s transaction."""
    driver = await _driver(conn)
    if db.is_sqlite:
        marks = ", ".join("?" * len(columns))
        await driver.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                                 [tuple(_stored(v, True) for v in row) for row in rows])
    else:
        await driver.copy_records_to_table(table, records=rows, columns=list(columns))


@asynccontextmanager
async def _bulk(conn, db, table, rebuild: bool):
    """A bulk load into `table` in `conn`'s transaction. When `rebuild`, its indexes are dropped
    first and made again after it (all or nothing, in the transaction): one sort per index
    instead of a random B-tree insert per row and index."""
    dialect = conn.dialect
    dropped = [i for i in table.indexes if made_on(i, dialect.name)] if rebuild else []
    for index in dropped:
        await conn.exec_driver_sql(f"DROP INDEX {index.name}")
    await conn.exec_driver_sql(f"PRAGMA cache_size = {-LOAD_CACHE_KB}" if db.is_sqlite
                               else f"SET LOCAL maintenance_work_mem = '{LOAD_CACHE_KB}kB'")
    try:
        yield
        for index in dropped:
            await conn.exec_driver_sql(str(CreateIndex(index).compile(dialect=dialect)))
    finally:
        if db.is_sqlite:  # the connection goes back to the pool
            await conn.exec_driver_sql("PRAGMA cache_size = -2000")


async def _vacuum(db, table) -> None:
    """After a load on PostgreSQL, outside its transaction. Until autovacuum's next pass the
    planner has the statistics of the table as it was before (a deep page of the users table
    then scanned the whole table: 67 ms instead of 0.2 ms on 100,000 users), and a count must
    visit every row its index names (no visibility map yet), docs/PERFORMANCE.md."""
    if db.is_sqlite:
        return
    async with db.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql(f"VACUUM (ANALYZE) {table.name}")


async def _row_count(db, table) -> int:
    async with db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def add_demo_users(db, count: int, password_hash: str, progress=None) -> int:
    """Adds `count` demo users in one transaction."""
    rebuild = count >= REBUILD_FROM * (await _row_count(db, users) + count)
    async with db.write() as conn:
        start = ((await conn.execute(select(func.max(users.c.id)))).scalar() or 0) + 1
        if db.is_sqlite:
            await conn.exec_driver_sql("DROP TRIGGER users_search_insert")
        done = 0
        async with _bulk(conn, db, users, rebuild):
            for chunk in _chunks(fake_users(count, start, password_hash), CHUNK):
                await _copy(conn, db, "users", USER_COLUMNS, [tuple(row[c] for c in USER_COLUMNS) for row in chunk])
                done += len(chunk)
                if progress:
                    progress(done, count)
        if db.is_sqlite:
            await conn.exec_driver_sql(
                "INSERT INTO users_search (rowid, username, email) SELECT id, username, email FROM users "
                f"WHERE id >= {int(start)}")
            await conn.exec_driver_sql(SEARCH_INSERT_TRIGGER)
    await _vacuum(db, users)
    return done


# ---- audit events ---------------------------------------------------------------------------

# What people do, and how often (weights): a customer's own logins and logouts most of all,
# staff changes to users now and then.
SELF_ACTIONS = (("login", 40), ("logout", 22), ("login_failed", 9), ("password_change", 2),
                ("preferences", 2), ("password_reset_requested", 1), ("password_reset", 1),
                ("email_confirmed", 1), ("reauthenticate", 1), ("second_factor_added", 0.5))
STAFF_ACTIONS = (("update", 12), ("create", 3), ("delete", 1), ("restore", 0.3), ("unlock", 0.7),
                 ("session_end", 0.5), ("invite_resent", 0.5), ("export", 0.2))
ACTIONS, WEIGHTS = zip(*SELF_ACTIONS, *STAFF_ACTIONS)
STAFF = {action for action, _ in STAFF_ACTIONS}
# Most staff work is done by a few people: a core of busy Admins and Managers.
BUSY_STAFF = 25
DAYS = 730


def _ip(rng) -> str:
    if rng.random() < 0.2:
        return f"2001:db8:{rng.randrange(65536):x}:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}"
    return f"{rng.choice((10, 172, 192, 198, 203))}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _changes(action: str, rng, target) -> dict | None:
    if action == "update":
        field = rng.choice(("role", "active", "email", "username"))
        if field == "role":
            return {"role": [target.role, rng.choice([r for r in ROLES if r != target.role])]}
        if field == "active":
            return {"active": [True, False] if rng.random() < 0.6 else [False, True]}
        return {field: [f"old.{getattr(target, field)}", getattr(target, field)]}
    if action == "login_failed":
        return {"identifier": [None, target.username]}
    if action == "create":
        return {"role": [None, target.role], "email": [None, target.email]}
    if action == "export":
        return {"rows": [None, rng.randrange(10, 5000)]}
    return None


class _People:
    """The users events are about, by creation time: at any moment only those created by then
    act or are acted on."""

    def __init__(self, rows):
        self.rows = sorted(rows, key=lambda r: r.created_at)
        self.created = [r.created_at for r in self.rows]
        self.staff = [r for r in self.rows if r.role in ("Admin", "Manager")] or self.rows
        self.staff_created = [r.created_at for r in self.staff]

    def someone(self, rng, moment):
        return self.rows[rng.randrange(max(1, bisect.bisect_right(self.created, moment)))]

    def staff_member(self, rng, moment):
        existing = max(1, bisect.bisect_right(self.staff_created, moment))
        return self.staff[rng.randrange(min(existing, BUSY_STAFF) if rng.random() < 0.7 else existing)]


def fake_events(people: _People, count: int, first_id: int, seed: int = 7):
    """`count` events from DAYS ago to now, in time order, ids from `first_id` on, as
    audit_trail.Event (unsealed)."""
    rng = random.Random(seed + first_id)
    now = utcnow()
    start = max(now - timedelta(days=DAYS), people.created[0])
    step = (now - start) / count
    for n in range(count):
        moment = start + step * (n + rng.random())
        action = rng.choices(ACTIONS, WEIGHTS)[0]
        target = people.someone(rng, moment)
        actor = people.staff_member(rng, moment) if action in STAFF else target
        failed = action == "login_failed"
        yield audit_trail.Event(
            id=first_id + n, occurred_at=moment, actor_id=None if failed else actor.id,
            actor_name="" if failed else actor.username, action=action, target_type="user",
            target_id=target.id, target_name=target.username, changes=_changes(action, rng, target), ip=_ip(rng))


async def _reserve_ids(conn, db, count: int) -> int:
    """The first of `count` consecutive event ids nobody else will take."""
    if db.is_sqlite:  # the write lock is ours: nobody else inserts meanwhile
        return ((await conn.execute(select(func.max(audit_events.c.id)))).scalar() or 0) + 1
    # The sequence moved past the block in one step, under a lock that keeps others' nextval
    # out meanwhile (the table's lock: inserts wait for this load's transaction anyway).
    await conn.exec_driver_sql("LOCK TABLE audit_events IN EXCLUSIVE MODE")
    sequence = "pg_get_serial_sequence('audit_events', 'id')"
    last = (await conn.execute(text(f"SELECT greatest(nextval({sequence}), "
                                    "(SELECT coalesce(max(id), 0) + 1 FROM audit_events))"))).scalar_one()
    await conn.execute(text(f"SELECT setval({sequence}, :last)"), {"last": last + count - 1})
    return last


async def add_demo_events(db, count: int, progress=None) -> int:
    """Adds `count` audit events by and about the existing users, sealed into the chain, in one
    transaction (a load of events that are not sealed yet would be reported as inserted)."""
    async with db.read() as conn:
        people = _People((await conn.execute(select(
            users.c.id, users.c.username, users.c.email, users.c.role, users.c.created_at))).all())
    if not people.rows:
        raise ValueError("audit events need users: add some first (--users)")
    rebuild = count >= REBUILD_FROM * (await _row_count(db, audit_events) + count)
    async with db.write() as conn:
        head = await audit_trail._lock_head(conn)
        position, previous = head.position, head.chain_hash
        first_id = await _reserve_ids(conn, db, count)
        done = 0
        async with _bulk(conn, db, audit_events, rebuild):
            for chunk in _chunks(fake_events(people, count, first_id), CHUNK):
                links, position, previous = audit_trail.chained(chunk, position, previous, db.audit_key)
                await _copy(conn, db, "audit_events", EVENT_COLUMNS, [
                    (*event[:8], json.dumps(event.changes) if event.changes is not None else None, event.ip,
                     link["position"], link["hash"]) for event, link in zip(chunk, links)])
                done += len(chunk)
                if progress:
                    progress(done, count)
        await conn.execute(update(audit_chain).where(audit_trail.HEAD).values(
            scheme=audit_trail.scheme(db.audit_key), position=position, chain_hash=previous, sealed_at=utcnow()))
    await _vacuum(db, audit_events)
    return done
