"""The fast lane: short SQLite reads on the event loop's own thread.

Through aiosqlite every statement is several trips to a worker thread and back, which cost
far more than a short indexed read itself (docs/PERFORMANCE.md, "The hot path"). Here a read
runs in the calling thread, on a connection of its own, and only while it stays short:

- the connection is read-only (`PRAGMA query_only`) and never waits for a lock
  (`busy_timeout=0`): a read that meets one (SQLITE_BUSY, rare in WAL mode) goes the usual
  way, through aiosqlite's thread, where waiting blocks nobody;
- a statement runs at most STEP_BUDGET steps of SQLite's virtual machine: past that,
  sqlite3's progress handler interrupts it and it runs again through the thread;
- a statement whose program has a step of unbounded cost (a count that walks a whole
  b-tree in one step, a virtual table such as the FTS5 search) never starts here.

So the event loop is never held longer than STEP_BUDGET steps of an ordinary read, and every
read answers the same whichever way it went. Writes never come here: they stay serialized
through Database.write().
"""
import sqlite3
import threading
from collections import OrderedDict

from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

# The users table's page of 51 rows is about 2,500 steps (three correlated lookups a row), a
# session check 32 and a row by id 54 (bench/hotpath.py prints each); a scan stopped at 20,000
# steps has held the loop for about 0.5 ms (docs/PERFORMANCE.md, "The hot path").
STEP_BUDGET = 20_000
# The progress handler runs once per this many steps: the bound is kept to within one tick.
TICK = 1_000
# Opcodes that can do unbounded work in a single step (EXPLAIN's names): OP_Count walks a
# whole b-tree, a virtual table's filter can read a whole index (FTS5), and neither calls
# the progress handler meanwhile.
UNBOUNDED = frozenset({"Count", "VFilter", "VNext", "VUpdate", "IntegrityCk", "Vacuum", "Checkpoint"})
KNOWN_STATEMENTS = 1_024


class Refused(Exception):
    """This read does not run in the fast lane; it goes through aiosqlite's thread."""


class Lane:
    """One read-only sqlite3 connection used by the thread that first reads through it (the
    event loop's); SQLAlchemy compiles and processes results as it does for aiosqlite."""

    def __init__(self, url: str):
        path = make_url(url).database
        self.engine = create_engine(
            make_url(url).set(drivername="sqlite"), poolclass=StaticPool,
            creator=lambda: sqlite3.connect(path, isolation_level=None))
        event.listen(self.engine, "connect", self._prepare)
        event.listen(self.engine, "before_cursor_execute", self._admit)
        self.thread = None
        self._connection = None
        self._ticks_left = STEP_BUDGET // TICK
        # EXPLAINed statements: SQL text -> whether its program is bounded by its steps.
        self._bounded = OrderedDict()
        self.answered = 0  # reads answered here (tests and bench/hotpath.py read these counts)
        self.interrupted = 0  # stopped at the budget
        self.busy = 0
        self.refused = 0

    def _prepare(self, dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA busy_timeout=0")
        dbapi_connection.execute("PRAGMA query_only=1")
        dbapi_connection.set_progress_handler(self._tick, TICK)

    def _tick(self) -> int:
        self._ticks_left -= 1
        return self._ticks_left < 0  # nonzero interrupts the statement

    def _admit(self, conn, cursor, statement, parameters, context, executemany):
        self._ticks_left = STEP_BUDGET // TICK
        bounded = self._bounded.get(statement)
        if bounded is None:
            opcodes = {row[1] for row in cursor.execute("EXPLAIN " + statement, parameters)}
            bounded = self._bounded[statement] = not opcodes & UNBOUNDED
            if len(self._bounded) > KNOWN_STATEMENTS:
                self._bounded.popitem(last=False)
        if not bounded:
            self.refused += 1
            raise Refused(statement)
        self._ticks_left = STEP_BUDGET // TICK  # EXPLAIN's own steps do not count

    def execute(self, statement, parameters=None):
        """The statement's whole result, read here; raises Refused when it must go through the
        thread instead (refused, over the budget, or the database busy)."""
        if threading.get_ident() != (self.thread or threading.get_ident()) or not statement.is_select:
            raise Refused(statement)
        self.thread = threading.get_ident()
        try:
            if self._connection is None:
                self._connection = self.engine.connect()
            # Every row read now: the statement ends here, within its budget, and holds no
            # read transaction open while the caller awaits something else.
            result = self._connection.execute(statement, parameters).freeze()()
        except (OperationalError, sqlite3.OperationalError) as error:
            if self._connection is not None:
                self._connection.rollback()
            code = getattr(getattr(error, "orig", error), "sqlite_errorcode", 0) & 0xFF  # the primary code
            if code == sqlite3.SQLITE_INTERRUPT:
                self.interrupted += 1
            elif code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                self.busy += 1
            else:
                raise
            raise Refused(statement) from error
        except Refused:
            self._connection.rollback()
            raise
        self.answered += 1
        return result

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self.engine.dispose()


class QuickConnection:
    """What the query functions use of a connection (execute, dialect, engine), reading in the
    fast lane and, for a statement it refuses, through `fallback` (an async context manager
    giving an ordinary connection, opened only if needed)."""

    def __init__(self, lane: Lane, engine, fallback):
        self._lane = lane
        self.engine = engine  # the app's engine: caches keyed by it (recent.py) are shared
        self.dialect = lane.engine.dialect
        self._fallback = fallback

    async def execute(self, statement, parameters=None):
        try:
            return self._lane.execute(statement, parameters)
        except Refused:
            async with self._fallback() as conn:
                return (await conn.execute(statement, parameters)).freeze()()
