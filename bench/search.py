#!/usr/bin/env python3
"""What a search of the users table costs: the prefix search it was, and any part as it is now.

    .venv/bin/python bench/search.py                                  # 100,000 users, both databases
    .venv/bin/python bench/search.py --users 20000 --repeats 50 --no-postgres

Fills a fresh SQLite file and a throwaway PostgreSQL database (on 127.0.0.1:5432, as the tests
use) with demo users, then reads the users table's first page (sorted by username) through
web/users/queries.load_page for fixed terms that match about one row, about 1 % of the rows,
every row and none: each as a prefix (what the search was before migration 0008, and is still
under three characters) and as any part of a username or email. "page" is the page's query
alone (its count reused, as when paging on), "+count" the page and its count read anew (a term
just typed). Prints the rows found and the p50 and p99 in ms. Results: docs/PERFORMANCE.md.
"""
import argparse
import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from web.core.db import Database  # noqa: E402
from web.core.demo import add_demo_users  # noqa: E402
from web.users import queries  # noqa: E402

import throwaway  # noqa: E402  (bench/, beside this script)

# Demo users are first.lastN@domain, every domain an example one (web/core/demo.py).
TERMS = (("~1 row", "USERNAME"), ("~1%", "a.kim"), ("all rows", "example"), ("none", "no-such-user"))


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)] * 1000


async def timed(read, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        await read()
        samples.append(time.perf_counter() - start)
    return samples


async def measure(db: Database, view: queries.TableState, repeats: int) -> dict:
    async def page():
        async with db.read() as conn:
            return await queries.load_page(conn, view)

    async def page_and_count():
        async with db.read() as conn:
            await queries.load_page(conn, view)
            await queries._count(conn, view)  # what count_matching reuses for a few seconds

    async with db.read() as conn:
        found = await queries._count(conn, view)
    await timed(page, min(repeats, 5))  # warm the caches
    return {"found": found, "page": await timed(page, repeats), "count": await timed(page_and_count, repeats)}


async def bench(name: str, url: str, users: int, repeats: int) -> None:
    db = Database(url)
    try:
        await db.create_schema()
        start = time.perf_counter()
        await add_demo_users(db, users, "not a real hash")
        print(f"{name}: {users:,} demo users loaded in {time.perf_counter() - start:.1f} s")
        async with db.read() as conn:
            one = (await queries.load_page(conn, queries.TableState(sort="created"))).rows[0].username
        print(f"{'':<11}{'term':<16}{'search':<9}{'rows':>8}  {'page p50':>9} {'p99':>7}  "
              f"{'+count p50':>10} {'p99':>7}")
        for label, term in TERMS:
            term = one if term == "USERNAME" else term
            for mode, shortest in (("prefix", math.inf), ("any part", 3)):
                queries.SUBSTRING_MIN = shortest  # infinity: every term a prefix, as before 0008
                r = await measure(db, queries.TableState(q=term), repeats)
                print(f"{label:<11}{term:<16}{mode:<9}{r['found']:>8,}  {percentile(r['page'], 0.5):>9.2f} "
                      f"{percentile(r['page'], 0.99):>7.2f}  {percentile(r['count'], 0.5):>10.2f} "
                      f"{percentile(r['count'], 0.99):>7.2f}", flush=True)
        print()
    finally:
        queries.SUBSTRING_MIN = 3
        await db.dispose()


async def with_postgres(users: int, repeats: int) -> None:
    async with throwaway.postgres("gatehouse_bench_search") as url:
        await bench("PostgreSQL", url, users, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    print(f"First page of the users table by username, {args.repeats} reads per term and search\n")
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(bench("SQLite", f"sqlite+aiosqlite:///{Path(tmp) / 'bench.sqlite3'}", args.users, args.repeats))
    if not args.no_postgres:
        asyncio.run(with_postgres(args.users, args.repeats))


if __name__ == "__main__":
    main()
