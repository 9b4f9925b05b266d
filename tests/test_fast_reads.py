"""The fast lane (web/core/quick.py): short SQLite reads run on the event loop's thread, and
nothing else does. A slow read is stopped after a bounded number of SQLite VM steps and answered
through aiosqlite's thread; a count or a search never starts there; a locked database sends the
read to the thread, which waits; the answers are the same either way, on both databases.

Bounds are counted in VM steps (sqlite3's progress handler), never timed."""
import asyncio
import sqlite3
import threading
from datetime import datetime

import pytest
from sqlalchemy import column, func, literal, select, table, update

from helpers import open_session, page, signed_in
from web.accounts import queries as accounts, sessions
from web.core import quick
from web.core.db import Database
from web.core.tables import users, users_search
from web.users import queries


def counting(budget: int):
    """A recursive count to `budget`: no table, only VM steps (a few per number)."""
    numbers = select(literal(1).label("n")).cte("numbers", recursive=True)
    numbers = numbers.union_all(select(numbers.c.n + 1).where(numbers.c.n < budget))
    return select(func.sum(numbers.c.n))


@pytest.fixture
def ticks(monkeypatch):
    """How many progress ticks each statement in the fast lane ran on the calling thread."""
    seen = []
    tick = quick.Lane._tick

    def counted(lane):
        if lane._ticks_left == quick.STEP_BUDGET // quick.TICK:
            seen.append(0)  # the statement's first tick
        seen[-1] += 1
        return tick(lane)
    monkeypatch.setattr(quick.Lane, "_tick", counted)
    return seen


async def both_ways(db, read):
    """`await read(conn)` through db.read() and through db.quick()."""
    async with db.read() as conn:
        slow = await read(conn)
    async with db.quick() as conn:
        fast = await read(conn)
    return slow, fast


async def test_the_hot_reads_answer_the_same_as_through_the_thread(app, db, make_user):
    admin = await make_user("Admin")
    for n in range(3):
        await make_user("Customer", username=f"carol{n}", active=n != 1)
    client = app.test_client()
    sid = await open_session(app, client, admin["id"])

    async def session_check(conn):
        return (await conn.execute(sessions.SESSION_USER, {"sid": sid, "now": sessions.utcnow()})).first()
    checks = await both_ways(db, session_check)
    pages = await both_ways(db, lambda conn: queries.load_page(conn, queries.TableState(sort="created", size=25)))
    rows = await both_ways(db, lambda conn: queries.load_row(conn, admin["id"]))
    users_by_id = await both_ways(db, lambda conn: accounts.get_user(conn, admin["id"]))
    assert pages[0].rows == pages[1].rows and len(pages[1].rows) == 4 and pages[1].total == 4
    assert rows[0] == rows[1] and users_by_id[0] == users_by_id[1]
    assert checks[0] == checks[1] and checks[1].username == admin["username"]
    # SQLAlchemy's result processing: SQLite's text comes back as datetime, 0/1 as bool.
    assert isinstance(rows[1].created_at, datetime) and rows[1].active is True
    assert [r.active for r in pages[1].rows] == [r.active for r in pages[0].rows]
    if db.is_sqlite:
        lane = db._lane
        assert lane.answered >= 4 and lane.interrupted == lane.busy == 0
        assert lane.thread == threading.get_ident()


async def test_a_signed_in_page_reads_its_session_and_rows_on_the_loop(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    for n in range(3):
        await make_user("Customer", username=f"dora{n}")
    body = await page(client, "/users")
    assert "dora2" in body
    if db.is_sqlite:
        lane = app.db._lane
        assert lane.answered >= 2 and lane.thread == threading.get_ident()  # the session check, the page


@pytest.mark.sqlite_only
async def test_a_slow_query_cannot_take_the_fast_lane(db, ticks):
    budget = quick.STEP_BUDGET
    async with db.quick() as conn:
        answer = (await conn.execute(counting(budget))).scalar()
    assert answer == budget * (budget + 1) // 2  # answered all the same, through the thread
    assert db._lane.interrupted == 1 and db._lane.answered == 0
    # On the loop it ran at most the budget (plus the one tick the progress handler rounds to).
    assert ticks == [quick.STEP_BUDGET // quick.TICK + 1]


@pytest.mark.sqlite_only
async def test_a_scan_of_a_large_table_is_stopped_on_the_loop_and_answered_by_the_thread(db, make_user, monkeypatch,
                                                                                     ticks):
    made = [await make_user("Customer", username=f"scan{n:02}") for n in range(40)]
    monkeypatch.setattr(quick, "TICK", 10)
    lane = quick.Lane(db.url)  # its connection takes the smaller tick
    quick_db = quick.QuickConnection(lane, db.engine, db.read)
    try:
        await quick_db.execute(select(users.c.id).limit(1))  # a new connection first reads the schema
        # Scaled down: a table of 40 rows is "large" for a budget of 100 steps.
        monkeypatch.setattr(quick, "STEP_BUDGET", 100)
        ticks.clear()
        scan = select(func.sum(func.length(users.c.username)))  # no index covers it: every row
        answer = (await quick_db.execute(scan)).scalar()
        by_id = (await quick_db.execute(select(users.c.username).where(users.c.id == made[7]["id"]))).scalar()
    finally:
        lane.close()
    assert answer == 40 * len("scan00") and by_id == "scan07"
    assert lane.interrupted == 1 and lane.answered == 2
    assert ticks[0] == 100 // 10 + 1 and sum(ticks[1:]) <= 100 // 10


@pytest.mark.sqlite_only
async def test_counts_and_searches_never_start_on_the_loop(db, make_user, ticks):
    account = await make_user("Customer", username="erin.search")
    everyone = select(func.count()).select_from(users)  # a whole index in one step
    search = select(users_search.c.rowid).where(users_search.c.users_search.match('"erin.sea"'))  # FTS5
    async with db.quick() as conn:
        assert (await conn.execute(everyone)).scalar() == 1
        assert (await conn.execute(search)).scalars().all() == [account["id"]]
    assert db._lane.refused == 2 and db._lane.answered == 0 and db._lane.interrupted == 0
    assert ticks == []  # refused before their first step (EXPLAIN runs no step of theirs)


@pytest.mark.sqlite_only
async def test_a_locked_database_sends_the_read_to_the_thread_which_waits(tmp_path):
    path = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    holder.execute("INSERT INTO t VALUES (7)")
    # In exclusive locking mode a WAL database stays locked once written, until the connection
    # closes: no other connection can even read it (what a crash recovery would do briefly).
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("INSERT INTO t VALUES (8)")
    db = Database(f"sqlite+aiosqlite:///{path}")
    t = table("t", column("x"))

    async def read():
        async with db.quick() as conn:
            return (await conn.execute(select(func.sum(t.c.x)))).scalar()
    try:
        task = asyncio.create_task(read())
        await asyncio.sleep(0)  # the task tries the lane, gets SQLITE_BUSY at once, waits in the thread
        assert db._lane.busy == 1 and not task.done()
        holder.close()  # lets go of the lock
        assert await task == 15
        assert await read() == 15 and db._lane.answered == 1
    finally:
        holder.close()
        await db.dispose()


@pytest.mark.sqlite_only
async def test_the_lane_never_writes_nor_waits_for_a_lock(db, make_user):
    account = await make_user("Customer", username="gil")
    with pytest.raises(quick.Refused):
        db._lane.execute(update(users).where(users.c.id == account["id"]).values(username="x"))
    async with db.quick() as conn:
        await conn.execute(select(users.c.id))
    # A write that slipped through would be refused by the connection itself.
    raw = db._lane._connection.connection.dbapi_connection
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        raw.execute("UPDATE users SET username = 'x'")
    assert raw.execute("PRAGMA busy_timeout").fetchone() == (0,)
