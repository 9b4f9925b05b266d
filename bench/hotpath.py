#!/usr/bin/env python3
"""What the three reads of the hot path cost, each way they can be sent to the database.

    .venv/bin/python bench/hotpath.py                       # 10,000 users, SQLite and PostgreSQL
    .venv/bin/python bench/hotpath.py --users 100000 --queries 4000 --no-postgres

Fills a fresh SQLite file and a throwaway PostgreSQL database (127.0.0.1:5432, as the tests
use; dropped at the end) with demo users and one session, then sends the three reads every
signed-in page of the users table makes (the session check, a deep page of 51 rows by keyset,
a row by id; the statements web/accounts/sessions.py and web/users/queries.py build) from
--tasks concurrent tasks, --queries times each way; then, on SQLite, the whole request for the
deep page's htmx fragment through the app in this process, with the fast lane and without (the ways take turns, --rounds times;
each figure is the median of its rounds):

SQLite: SQLAlchemy async over aiosqlite (Database.read, as before); one hop (the statement
compiled once, sent with aiosqlite's execute_fetchall on the pooled driver connection, rows
unprocessed); the fast lane (Database.quick, web/core/quick.py); plain sqlite3 in the event
loop's thread (compiled once, rows unprocessed: the floor).
PostgreSQL: SQLAlchemy async over asyncpg (Database.read, prepared statements cached, as
before); the same with the cache off (prepared_statement_cache_size=0); the same in
AUTOCOMMIT (no BEGIN and ROLLBACK around the read); one hop (asyncpg's fetch on the pooled
driver connection, which prepares and caches statements itself).

Prints, per read and way, the CPU of the whole process per query (aiosqlite's threads
included) and the wall time per query, and for SQLite the statement's VM steps (what the
fast lane's budget counts). Results: docs/PERFORMANCE.md, "The hot path".
"""
import argparse
import asyncio
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from web.accounts import sessions  # noqa: E402
from web.core import quick  # noqa: E402
from web.core.db import Database, utcnow  # noqa: E402
from web.core.demo import add_demo_users  # noqa: E402
from web.core.tables import users  # noqa: E402
from web.users import queries  # noqa: E402

import throwaway  # noqa: E402  (bench/, beside this script)



class Recorder:
    """Stands in for a connection: keeps the statements a query function sends, answers them
    through the real one."""

    def __init__(self, conn):
        self._conn, self.engine, self.dialect, self.sent = conn, conn.engine, conn.dialect, []

    async def execute(self, statement, parameters=None):
        self.sent.append((statement, parameters))
        return await self._conn.execute(statement, parameters)


async def the_reads(db: Database) -> dict:
    """name -> (statement, parameters): the session check, a deep page, a row by id."""
    async with db.read() as conn:
        ids = (await conn.execute(select(users.c.id).order_by(users.c.id))).scalars().all()
    middle = ids[len(ids) // 2]
    async with db.write() as conn:
        token = await sessions.start(conn, ids[0], False, "bench", "127.0.0.1", Config())
    async with db.read() as conn:
        row = await queries.load_row(conn, middle)
        cursor = queries.encode_cursor(queries.SORTS["username"], row)
        recorder = Recorder(conn)
        await queries.load_page(recorder, queries.TableState(after=cursor, page=2))
        page = next(sent for sent in recorder.sent if sent[0]._order_by_clauses)  # not the count
        recorder.sent.clear()
        await queries.load_row(recorder, middle)
    return {"session check": (sessions.SESSION_USER, {"sid": sessions.session_id(token), "now": utcnow()}),
            "page of 51 by keyset": page, "row by id": recorder.sent[0]}


class Config:
    session_absolute = remember_absolute = 3600


def driver_arguments(compiled, parameters) -> list:
    """The positional values the DBAPI gets for `compiled` (SQLAlchemy's bind processing)."""
    values = compiled.construct_params(parameters)
    processors = compiled._bind_processors
    return [processors[name](values[name]) if name in processors else values[name] for name in compiled.positiontup]


async def measure(send, queries_n: int, tasks: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per query, `queries_n` queries from `tasks` concurrent tasks."""
    each = max(1, queries_n // tasks)

    async def task():
        for _ in range(each):
            await send()
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(task() for _ in range(tasks)))
    n = each * tasks
    return (time.process_time() - cpu) / n * 1000, (time.perf_counter() - wall) / n * 1000


def vm_steps(path: str, sql: str, arguments: list) -> int:
    conn = sqlite3.connect(path)
    steps = [0]

    def count():
        steps[0] += 1
    conn.execute(sql, arguments).fetchall()  # a new connection first reads the schema
    conn.set_progress_handler(count, 1)
    conn.execute(sql, arguments).fetchall()
    conn.close()
    return steps[0]


def ways_sqlite(db: Database, path: str, statement, parameters) -> dict:
    compiled = statement.compile(dialect=db.engine.dialect)
    sql, arguments = str(compiled), driver_arguments(compiled, parameters)
    plain = sqlite3.connect(path)

    async def through_sqlalchemy():
        async with db.read() as conn:
            return (await conn.execute(statement, parameters)).all()

    async def one_hop():
        async with db.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            return await driver.execute_fetchall(sql, arguments)

    async def fast_lane():
        async with db.quick() as conn:
            return (await conn.execute(statement, parameters)).all()

    async def plain_sqlite3():
        return plain.execute(sql, arguments).fetchall()
    return {"SQLAlchemy async + aiosqlite (read)": through_sqlalchemy, "one hop: aiosqlite execute_fetchall": one_hop,
            "fast lane (quick)": fast_lane, "plain sqlite3, loop thread": plain_sqlite3}


def ways_postgres(db: Database, uncached: Database, statement, parameters) -> dict:
    compiled = statement.compile(dialect=db.engine.dialect)
    sql, arguments = str(compiled), driver_arguments(compiled, parameters)

    async def through(database, **options):
        async with database.engine.connect() as conn:
            if options:
                conn = await conn.execution_options(**options)
            return (await conn.execute(statement, parameters)).all()

    async def one_hop():
        async with db.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            return await driver.fetch(sql, *arguments)
    return {"SQLAlchemy async + asyncpg (read)": lambda: through(db),
            "  prepared statement cache off": lambda: through(uncached),
            "  AUTOCOMMIT (no BEGIN/ROLLBACK)": lambda: through(db, isolation_level="AUTOCOMMIT"),
            "fast lane (quick)": lambda: through_quick(db, statement, parameters),
            "one hop: asyncpg fetch": one_hop}


async def through_quick(db, statement, parameters):
    async with db.quick() as conn:
        return (await conn.execute(statement, parameters)).all()


async def compare(ways: dict, queries_n: int, tasks: int, rounds: int) -> dict:
    """way -> (rows, CPU ms, wall ms): the ways take turns, `rounds` times, and each figure is
    the median of its rounds (the machine's load drifts less within a round)."""
    rows = {way: len(await send()) for way, send in ways.items()}  # warm: connections, caches
    figures = {way: [] for way in ways}
    for _ in range(rounds):
        for way, send in ways.items():
            figures[way].append(await measure(send, queries_n // rounds, tasks))
    return {way: (rows[way], statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs))
            for way, runs in figures.items()}


def stopped_at_budget(lane: quick.Lane, statement, repeats: int) -> float:
    """The median wall ms a read over the fast lane's budget holds the calling thread before
    it is stopped (it then goes to aiosqlite's thread)."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            lane.execute(statement)
        except quick.Refused:
            samples.append((time.perf_counter() - start) * 1000)
        else:
            raise SystemExit("the read was not stopped: make --users larger")
    return statistics.median(samples)


async def whole_request(path: str, queries_n: int, tasks: int, rounds: int) -> None:
    """The users table's deep page as htmx asks for it (session check, page, its count reused,
    rendering, gzip), through the real app in this process (Quart's test client), with the fast
    lane and without it (quick() then is read()): process CPU and wall per request."""
    from quart_auth import generate_auth_token
    from web import create_app
    from web.core.config import Config as AppConfig
    app = create_app(AppConfig(database_url=f"sqlite+aiosqlite:///{path}", secret_key=secrets.token_urlsafe(48)))
    lane = app.db._lane
    try:
        async with app.db.read() as conn:
            admin = (await conn.execute(select(users.c.id).where(users.c.role == "Admin").limit(1))).scalar_one()
            ids = (await conn.execute(select(users.c.id).order_by(users.c.id))).scalars().all()
            row = await queries.load_row(conn, ids[len(ids) // 2])
        async with app.db.write() as conn:
            token = await sessions.start(conn, admin, False, "bench", "127.0.0.1", Config())
        client = app.test_client()
        client.set_cookie("localhost", "gatehouse", generate_auth_token(client, token), httponly=True, samesite="Lax")
        url = queries.TableState(after=queries.encode_cursor(queries.SORTS["username"], row), page=2).url()
        headers = {"HX-Request": "true", "HX-Target": "users-table", "Accept-Encoding": "gzip"}

        async def fragment(fast_lane):
            app.db._lane = fast_lane
            response = await client.get(url, headers=headers)
            assert response.status_code == 200, response.status_code
            return await response.get_data()
        figures = await compare({"with the fast lane": lambda: fragment(lane), "without (read())": lambda: fragment(None)},
                                queries_n // 4, tasks, rounds)
        for way, (size, cpu, wall) in figures.items():
            print(f"  {'deep page, whole request':<26}{way:<36}{cpu:>13.3f}{wall:>14.3f}{size:>6}")
    finally:
        app.db._lane = lane
        await app.db.dispose()


def table_header() -> None:
    print(f"  {'read':<22}{'way':<40}{'CPU ms/query':>13}{'wall ms/query':>14}{'rows':>6}{'VM steps':>10}")


async def bench_sqlite(users_n: int, queries_n: int, tasks: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "hotpath.sqlite3")
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await db.create_schema()
            await add_demo_users(db, users_n, "not a real hash")
            reads = await the_reads(db)
            print(f"SQLite {sqlite3.sqlite_version}, {users_n:,} users, {tasks} tasks, {queries_n:,} queries a way in {rounds} rounds "
                  f"(fast lane budget {quick.STEP_BUDGET:,} steps)")
            table_header()
            for name, (statement, parameters) in reads.items():
                compiled = statement.compile(dialect=db.engine.dialect)
                steps = vm_steps(path, str(compiled), driver_arguments(compiled, parameters))
                figures = await compare(ways_sqlite(db, path, statement, parameters), queries_n, tasks, rounds)
                for way, (rows, cpu, wall) in figures.items():
                    print(f"  {name:<22}{way:<40}{cpu:>13.3f}{wall:>14.3f}{rows:>6}{steps:>10,}", flush=True)
            lane = db._lane
            print(f"  fast lane: {lane.answered:,} answered, {lane.interrupted} interrupted, {lane.busy} busy, "
                  f"{lane.refused} refused")
            await whole_request(path, queries_n, tasks, rounds)
            scan = select(func.sum(func.length(users.c.username)))
            print(f"  a scan of every user, stopped at the budget: {stopped_at_budget(lane, scan, 50):.2f} ms "
                  f"on the loop (median of 50)\n")
        finally:
            await db.dispose()


async def bench_postgres(users_n: int, queries_n: int, tasks: int, rounds: int) -> None:
    async with throwaway.postgres("gatehouse_bench_hotpath", c_collation=True) as url:
        db, uncached = Database(url), Database(url + "?prepared_statement_cache_size=0")
        try:
            await db.create_schema()
            await add_demo_users(db, users_n, "not a real hash")
            async with db.read() as conn:
                await conn.exec_driver_sql("ANALYZE")
            reads = await the_reads(db)
            print(f"PostgreSQL, {users_n:,} users, {tasks} tasks, {queries_n:,} queries a way in {rounds} rounds "
                  "(server CPU not counted)")
            table_header()
            for read, (statement, parameters) in reads.items():
                figures = await compare(ways_postgres(db, uncached, statement, parameters), queries_n, tasks, rounds)
                for way, (rows, cpu, wall) in figures.items():
                    print(f"  {read:<22}{way:<40}{cpu:>13.3f}{wall:>14.3f}{rows:>6}{'':>10}", flush=True)
            print()
        finally:
            await db.dispose()
            await uncached.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=2_000, help="per read and way")
    parser.add_argument("--tasks", type=int, default=8, help="concurrent tasks sending them")
    parser.add_argument("--rounds", type=int, default=5, help="the ways take turns this many times; medians")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    if not args.no_sqlite:
        asyncio.run(bench_sqlite(args.users, args.queries, args.tasks, args.rounds))
    if not args.no_postgres:
        asyncio.run(bench_postgres(args.users, args.queries, args.tasks, args.rounds))


if __name__ == "__main__":
    main()
