"""The database: engine, connection settings, and schema set-up."""
import asyncio
import warnings
from contextlib import asynccontextmanager, nullcontext
from datetime import UTC, datetime

from sqlalchemy import event, insert, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from .config import ROOT
from .quick import Lane, QuickConnection
from .tables import ROLES, roles

MIGRATIONS = ROOT / "migrations"
# The revision of a database made by create_all before migrations existed, told apart by
# an index revision 0002 added.
UNVERSIONED = (("ix_users_active", "0002"), (None, "0001"))

ROLE_DESCRIPTIONS = {
    "Admin": "Everything, including roles and other Admins",
    "Manager": "Reads users and the audit log; edits Customers",
    "Customer": "Own profile and dashboard",
}


BEFORE_COMMIT = "gatehouse.before_commit"


def before_commit(conn, step) -> list:
    """A list, kept with this write transaction, that `await step(db, conn, items)` gets as
    the transaction's last statements, just before it commits (and nobody gets on rollback).
    So a step can take a lock that only needs holding for the commit (the audit chain's head)."""
    return conn.info.setdefault(BEFORE_COMMIT, {}).setdefault(step, [])


AFTER_COMMIT = "gatehouse.after_commit"


def after_commit(conn, callback) -> None:
    """Calls `callback()` once this write transaction has committed (never on rollback)."""
    conn.info.setdefault(AFTER_COMMIT, []).append(callback)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


BUSY_TIMEOUT_MS = 5000
MIGRATION_WAIT_MS = 300_000
# Each pooled connection's page cache (SQLite's default: 2 MB). The pool reads what the fast
# lane refuses (a search, a count) and writes: a search warms every connection's cache, 10 MB of
# a worker's RSS for five, under the peak a hash adds 64 MiB to. 512 KB cost no measurable CPU
# on a search or count at 100,000 users: the file's pages stay in the system's cache.
POOL_CACHE_KB = 512


def _sqlite_pragmas(dbapi_connection, _record):
    # Let SQLAlchemy's begin event below emit BEGIN itself (pysqlite's own is deferred-only).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # Readers never block the writer and vice versa; one file plus its -wal.
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit acknowledged to a client survives power loss, not only a crash;
    # the audit trail is worth the extra fsync per transaction.
    cursor.execute("PRAGMA synchronous=FULL")
    # SQLite does not enforce REFERENCES unless asked, per connection.
    cursor.execute("PRAGMA foreign_keys=ON")
    # Wait up to 5 s for another writer instead of failing with 'database is locked'.
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute(f"PRAGMA cache_size=-{POOL_CACHE_KB}")  # negative: in KiB
    cursor.close()


def _sqlite_begin(conn):
    # A write transaction takes the lock up front: a deferred one that reads and then
    # writes can fail with SQLITE_BUSY at once, whatever the busy timeout. Reads emit no
    # BEGIN: each statement is then its own transaction, which saves the BEGIN's round trip
    # through aiosqlite's thread on every read (docs/PERFORMANCE.md).
    options = conn.get_execution_options()
    if options.get("write"):
        # Straight to aiosqlite: one trip to its thread instead of three (cursor, execute,
        # close), while this transaction keeps every other writer waiting.
        driver = conn.connection.driver_connection
        if wait := options.get("lock_wait_ms"):
            await_only(driver.execute(f"PRAGMA busy_timeout={int(wait)}"))
        await_only(driver.execute("BEGIN IMMEDIATE"))
        if wait:
            await_only(driver.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}"))


class Database:
    # Write transactions ended in this process, on any database: what was read before one
    # may be stale (recent.py reuses an answer only while this has not moved).
    writes = 0

    def __init__(self, url: str, *, audit_key: str = "", **engine_args):
        self.url = url
        # AUDIT_HMAC_KEY: the audit trail's chain is then an HMAC (audit_trail.py).
        self.audit_key = audit_key
        sqlite_file = url.startswith("sqlite") and make_url(url).database not in (None, "", ":memory:")
        if sqlite_file:
            # One writer at a time and two or so cores: more connections only add a page
            # cache each (~2 MB when warm) and contention, not throughput (docs/PERFORMANCE.md).
            engine_args = {"pool_size": 5, "max_overflow": 0, **engine_args}
        self.engine: AsyncEngine = create_async_engine(url, **engine_args)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        # SQLite has one writer at a time. This process's writers wait for it here, served in
        # turn, rather than in SQLite's busy handler, which polls with sleeps of up to 100 ms
        # (docs/PERFORMANCE.md); the busy timeout still covers other processes.
        self._writer = asyncio.Lock() if self.is_sqlite else nullcontext()
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
        # Short reads on the event loop's thread (quick.py): a file, which a connection of its
        # own sees as the others do.
        self._lane = Lane(url) if sqlite_file else None

    @asynccontextmanager
    async def read(self):
        """A connection for queries. On SQLite each statement reads its own snapshot: a read
        that must see several tables at one instant asks for it in one statement."""
        async with self.engine.connect() as conn:
            yield conn

    @property
    def sync_engines(self) -> list:
        """Every engine statements run through (the fast lane's too): what a listener for
        SQLAlchemy's statement events must watch."""
        return [self.engine.sync_engine] + ([self._lane.engine] if self._lane else [])

    @asynccontextmanager
    async def quick(self):
        """A connection for short indexed reads (a session, a page by keyset, a row by id): on
        SQLite they run on the event loop's thread while they stay short, and any other
        goes through read()'s thread (quick.py). Each statement reads its own snapshot."""
        if self._lane is None:
            async with self.read() as conn:
                yield conn
        else:
            yield QuickConnection(self._lane, self.engine, self.read)

    @asynccontextmanager
    async def write(self, lock_wait_ms: int = 0):
        """A transaction that holds the write lock (SQLite) and commits on success.
        lock_wait_ms: how long SQLite waits for another process's writer, if not the usual."""
        committed = []
        async with self._writer:
            try:
                async with self.engine.connect() as conn:
                    await conn.execution_options(write=True, lock_wait_ms=lock_wait_ms)
                    try:
                        async with conn.begin():
                            yield conn
                            for step, items in conn.info.get(BEFORE_COMMIT, {}).items():
                                await step(self, conn, items)
                        committed = conn.info.get(AFTER_COMMIT, [])
                    finally:
                        conn.info.pop(BEFORE_COMMIT, None)  # the connection goes back to the pool
                        conn.info.pop(AFTER_COMMIT, None)
            finally:
                Database.writes += 1
        for callback in committed:
            callback()

    async def create_schema(self) -> None:
        """Migrate the schema to the newest revision and add missing roles; safe to run again.

        A new database gets every migration; an older one is upgraded in place. All of it
        runs in one write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory
        lock), so two processes starting at once migrate one after the other."""
        await self.migrate("head", then=ensure_roles)

    async def migrate(self, revision: str = "head", then=None) -> None:
        """Upgrade the schema to `revision` ("head", "0001", ...), then `await then(conn)` in
        the same transaction: under the same lock, so two processes starting at once cannot
        both find a role missing and both add it."""
        # Another process may be migrating: its whole migration, not one transaction, is
        # what this one waits for (seconds on a busy machine; PostgreSQL's lock waits as long).
        async with self.write(lock_wait_ms=MIGRATION_WAIT_MS) as conn:
            if not self.is_sqlite:
                await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7273620)")  # any fixed key
            await conn.run_sync(_upgrade, revision, self.audit_key)
            if then is not None:
                await then(conn)

    async def revision(self) -> str | None:
        """The schema revision the database is at (None before any migration)."""
        from alembic.migration import MigrationContext
        async with self.read() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        if self._lane is not None:
            self._lane.close()
        await self.engine.dispose()


def alembic_config(connection=None):
    """Alembic's configuration, in code: the scripts in migrations/, run on `connection`."""
    from alembic.config import Config as AlembicConfig
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(sync_conn, revision: str, audit_key: str = "") -> None:
    from alembic import command
    from alembic.migration import MigrationContext
    config = alembic_config(sync_conn)
    config.attributes["audit_key"] = audit_key  # migration 0004 seals the existing events with it
    if MigrationContext.configure(sync_conn).get_current_revision() is None:
        tables = inspect(sync_conn).get_table_names()
        if "users" in tables:
            # Made by metadata.create_all before migrations existed: record what it holds.
            with warnings.catch_warnings():  # SQLite skips expression indexes, and says so
                warnings.simplefilter("ignore")
                indexes = {index["name"] for index in inspect(sync_conn).get_indexes("users")}
            command.stamp(config, next(rev for name, rev in UNVERSIONED if name is None or name in indexes))
    command.upgrade(config, revision)


async def ensure_roles(conn: AsyncConnection) -> None:
    present = set((await conn.execute(select(roles.c.name))).scalars())
    missing = [{"name": r, "description": ROLE_DESCRIPTIONS[r]} for r in ROLES if r not in present]
    if missing:
        await conn.execute(insert(roles), missing)
