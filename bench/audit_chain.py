#!/usr/bin/env python3
"""What sealing the audit trail into its hash chain costs per write.

    .venv/bin/python bench/audit_chain.py                     # SQLite and PostgreSQL
    .venv/bin/python bench/audit_chain.py --writes 4000 --writers 8 --no-postgres

Runs `--writes` transactions, each recording one audit event (as a failed login does), from
`--writers` concurrent tasks on one Database, twice: with the event inserted as before the
chain (no seal), and through audit_trail.record (inserted, then sealed under the head's lock
just before the commit). Reports transactions per second and the mean and 95th percentile
time per transaction, on a fresh SQLite file (synchronous=FULL, as the app runs it) and a
throwaway PostgreSQL database (on 127.0.0.1:5432, as the tests use). Results: docs/AUDIT.md.
"""
import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import delete, insert  # noqa: E402

from web.core import audit_trail as audit  # noqa: E402
from web.core.db import Database, utcnow  # noqa: E402
from web.core.tables import audit_chain, audit_events  # noqa: E402

import throwaway  # noqa: E402  (bench/, beside this script)

ACTOR = audit.Actor(None, "")


async def unsealed(conn, n: int) -> None:
    """The event as record() wrote it before the chain: one INSERT."""
    await conn.execute(insert(audit_events).values(
        occurred_at=utcnow(), actor_id=None, actor_name="", action="login_failed", target_type="user",
        target_id=None, changes={"identifier": [None, f"nobody{n}"]}, ip="198.51.100.7"))


async def sealed(conn, n: int) -> None:
    await audit.record(conn, "login_failed", "user", None, actor=ACTOR,
                       changes={"identifier": [None, f"nobody{n}"]}, ip="198.51.100.7")


async def run(db: Database, write, writes: int, writers: int) -> dict:
    async with db.write() as conn:
        await conn.execute(delete(audit_events))
        await conn.execute(delete(audit_chain))
    numbers = iter(range(writes))
    times = []

    async def writer():
        for n in numbers:
            start = time.perf_counter()
            async with db.write() as conn:
                await write(conn, n)
            times.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - start
    times.sort()
    return {"per_s": writes / elapsed, "mean_ms": statistics.mean(times) * 1000,
            "p95_ms": times[int(len(times) * 0.95)] * 1000}


async def bench(name: str, url: str, writes: int, writers: int, key: str) -> None:
    db = Database(url, audit_key=key)
    try:
        await db.create_schema()
        await run(db, sealed, writers * 10, writers)  # warm up the pool and the caches
        results = {label: await run(db, write, writes, writers)
                   for label, write in (("no chain", unsealed), ("chain", sealed))}
        verdict = await audit.verify(db)
        assert verdict.intact and verdict.checked == writes, verdict
    finally:
        await db.dispose()
    base, chained = results["no chain"], results["chain"]
    for label, r in results.items():
        print(f"{name:<11} {label:<9} {r['per_s']:>8,.0f} tx/s  mean {r['mean_ms']:6.2f} ms  p95 {r['p95_ms']:6.2f} ms")
    print(f"{name:<11} cost of the chain: {1000 / chained['per_s'] - 1000 / base['per_s']:+.3f} ms of throughput "
          f"per write, mean latency {chained['mean_ms'] - base['mean_ms']:+.2f} ms "
          f"({(chained['mean_ms'] / base['mean_ms'] - 1) * 100:+.0f} %)\n")


async def with_postgres(writes: int, writers: int, key: str) -> None:
    async with throwaway.postgres("gatehouse_bench_chain") as url:
        await bench("PostgreSQL", url, writes, writers, key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=4000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--hmac", action="store_true", help="seal with an HMAC key (AUDIT_HMAC_KEY)")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    key = "k" * 32 if args.hmac else ""
    print(f"{args.writes:,} transactions of one audit event each, {args.writers} concurrent writers, "
          f"{'HMAC-SHA-256' if key else 'SHA-256'}\n")
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench("SQLite", f"sqlite+aiosqlite:///{Path(tmp) / 'bench.sqlite3'}", args.writes, args.writers, key))
    if not args.no_postgres:
        asyncio.run(with_postgres(args.writes, args.writers, key))


if __name__ == "__main__":
    main()
