#!/usr/bin/env python3
"""Every users-table and audit-log view at a million users and five million audit events.

    .venv/bin/python bench/scale.py                     # 1,000,000 users, 5,000,000 events, both databases
    .venv/bin/python bench/scale.py --smoke             # 2,000 users, 5,000 events, 3 reads a view: the plumbing
    .venv/bin/python bench/scale.py --sqlite-path /tmp/scale.sqlite3 --postgres-url postgresql+asyncpg://…/db --reuse

Builds each database with `run.py demo-data --users N --audit-events M` (timed) and an Admin
with `run.py create-admin`, unless --reuse finds one already built. Then it logs in as that
Admin through the app's own test client, in this process, and reads every view one after the
other (one client): the users table's fragment as htmx asks for it (first page, a deep page,
each sort both ways, each filter, and searches for a term matching about one row, 1 % of the
rows, every row and none, under every sort both ways), the audit log (first page, by actor,
action, target, time range and combined) and the dashboard. The test client, not the real
server with wrk: one client asks one view at a time, so the figure wanted is the app's own time
for each view (session check, queries, rendering), without the loopback HTTP that is the same
for every view. Before each read the process counts a write (Database.writes), so the users
table's totals are never reused (web/core/recent.py): every read pays its count, as the first
one after any change does.

Prints p50 and p99 in ms per view and database, marks those over the 25 ms target, writes
bench/results/scale-<timestamp>.json, and exits 1 if any view did not answer 200.
Results: docs/PERFORMANCE.md, "A million users".
"""
import argparse
import asyncio
import json
import math
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from web import create_app  # noqa: E402
from web.core import keyset  # noqa: E402
from web.core.config import Config  # noqa: E402
from web.core.db import Database  # noqa: E402
from web.core.tables import audit_events, users  # noqa: E402
from web.users.queries import COLUMNS  # noqa: E402

import throwaway  # noqa: E402  (bench/, beside this script)

ADMIN = "scale.admin"
TARGET_MS = 25
TABLE = {"HX-Request": "true", "HX-Target": "users-table"}
# Demo users are first.lastN@domain, every domain an example one (web/core/demo.py).
TERMS = (("~1 row", None), ("~1%", "a.kim"), ("every row", "example"), ("none", "no-such-user"))
FILTERS = [("role", r) for r in ("Admin", "Manager", "Customer")] + \
          [("active", a) for a in ("1", "0", "locked", "invited", "expired")] + [("factor", f) for f in ("1", "0")]


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)] * 1000


def run_py(url: str, *args: str, stdin: str = "") -> float:
    """Runs `run.py args` on `url`; its wall time in seconds."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], input=stdin, text=True,
                            capture_output=True, env={**os.environ, "DATABASE_URL": url})
    if result.returncode:
        raise RuntimeError(f"run.py {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


async def built(url: str) -> bool:
    db = Database(url)
    try:
        async with db.read() as conn:
            return bool((await conn.execute(select(users.c.id).where(users.c.username == ADMIN))).first())
    except Exception:  # noqa: BLE001 (no schema yet: not built)
        return False
    finally:
        await db.dispose()


def build(url: str, n_users: int, n_events: int, password: str) -> dict:
    seconds = run_py(url, "demo-data", "--users", str(n_users))
    events_seconds = run_py(url, "demo-data", "--users", "0", "--audit-events", str(n_events))
    run_py(url, "create-admin", "--username", ADMIN, "--email", "scale.admin@example.com", stdin=password + "\n")
    return {"users_seconds": round(seconds, 1), "events_seconds": round(events_seconds, 1)}


async def landmarks(db: Database) -> dict:
    """What the views name: a user in the middle (a one-row search, a deep page), a busy staff
    member, a customer, a day and a month of events."""
    async with db.read() as conn:
        total = (await conn.execute(select(func.count()).select_from(users))).scalar_one()
        middle = (await conn.execute(select(users.c.id, users.c.username).order_by(func.lower(users.c.username))
                                     .offset(total * 4 // 5).limit(1))).one()
        last = {}
        for action in ("update", "login"):
            last[action] = (await conn.execute(select(audit_events).where(audit_events.c.action == action)
                                               .order_by(audit_events.c.occurred_at.desc()).limit(1))).first()
        newest = (await conn.execute(select(func.max(audit_events.c.occurred_at)))).scalar()
    return {"total": total, "middle": middle, "staff": last["update"], "customer": last["login"], "newest": newest}


def views(marks: dict) -> list[tuple[str, str, str, dict]]:
    """(group, name, path, headers) of every view measured."""
    middle = marks["middle"]
    deep = keyset.encode_cursor(middle.username.lower(), middle.id)
    deep_page = f"/users?after={deep}&page={marks['total'] * 4 // 250}"
    found = [("users", "first page", "/users", TABLE), ("users", "deep page (4/5 in, by username)", deep_page, TABLE)]
    for column, _ in COLUMNS:
        for direction in ("asc", "desc"):
            found.append(("users", f"sort {column} {direction}", f"/users?sort={column}&dir={direction}", TABLE))
    for name, value in FILTERS:
        found.append(("users", f"filter {name}={value}", f"/users?{name}={value}", TABLE))
    for label, term in TERMS:
        term = term or middle.username
        for column, _ in COLUMNS:
            for direction in ("asc", "desc"):
                query = urlencode({"q": term, "sort": column, "dir": direction})
                found.append(("search", f"{label} '{term}' by {column} {direction}", f"/users?{query}", TABLE))
    staff, customer, newest = marks["staff"], marks["customer"], marks["newest"]
    day = (newest.date()).isoformat() if newest else "2026-01-01"
    month = newest.strftime("%Y-%m") if newest else "2026-01"
    audit = [
        ("first page", {}),
        ("by busy staff actor", {"actor": staff.actor_name} if staff else {}),
        ("by customer actor", {"actor": customer.actor_name} if customer else {}),
        ("action update", {"action": "update"}),
        ("action login_failed", {"action": "login_failed"}),
        ("actions create+update+delete+restore", {"action": ["create", "update", "delete", "restore"]}),
        ("target user", {"target": customer.target_name} if customer else {}),
        ("one day", {"since": day, "until": day}),
        ("one month", {"since": f"{month}-01", "until": f"{month}-28"}),
        ("actor + action", {"actor": staff.actor_name, "action": "update"} if staff else {}),
        ("action + one day", {"action": "login", "since": day, "until": day}),
        ("target + action", {"target": customer.target_name, "action": "login"} if customer else {}),
        ("actor + one month", {"actor": staff.actor_name, "since": f"{month}-01"} if staff else {}),
    ]
    found += [("audit", name, "/audit?" + urlencode(args, doseq=True), {}) for name, args in audit]
    found.append(("dashboard", "dashboard (Admin)", "/dashboard", {}))
    return found


async def log_in(client, password: str) -> None:
    page = await (await client.get("/login")).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = await client.post("/login", form={"identifier": ADMIN, "password": password, "csrf_token": token})
    if answer.status_code != 303:
        raise RuntimeError(f"login as {ADMIN} answered {answer.status_code}")


async def measure(url: str, password: str, repeats: int, only: str = "") -> dict:
    app = create_app(Config(database_url=url, secret_key=secrets.token_hex(32)))
    results = {}
    try:
        marks = await landmarks(app.db)
        client = app.test_client()
        await log_in(client, password)
        for group, name, path, headers in views(marks):
            if only not in f"{group}: {name}":
                continue
            samples, statuses = [], set()
            for n in range(repeats + 2):  # two reads to warm the caches
                Database.writes += 1  # the users table's count is read anew (web/core/recent.py)
                start = time.perf_counter()
                answer = await client.get(path, headers=headers)
                await answer.get_data()
                if n >= 2:
                    samples.append(time.perf_counter() - start)
                statuses.add(answer.status_code)
            results[f"{group}: {name}"] = {"path": path, "statuses": sorted(statuses),
                                           "min": round(min(samples) * 1000, 2),
                                           "p50": round(percentile(samples, 0.5), 2),
                                           "p90": round(percentile(samples, 0.9), 2),
                                           "p99": round(percentile(samples, 0.99), 2)}
            print(f"  {group}: {name:<50} {results[f'{group}: {name}']['p50']:>8.2f} "
                  f"{results[f'{group}: {name}']['p99']:>8.2f}", file=sys.stderr, flush=True)
    finally:
        await app.db.dispose()
    return results


def on(name: str, url: str, args, password: str) -> dict:
    outcome = {"url": url.split("@")[-1]}
    if not (args.reuse and asyncio.run(built(url))):
        print(f"{name}: building {args.users:,} users and {args.events:,} events", file=sys.stderr, flush=True)
        outcome["build"] = build(url, args.users, args.events, password)
        print(f"{name}: built in {outcome['build']}", file=sys.stderr, flush=True)
    outcome["views"] = asyncio.run(measure(url, password, args.repeats, args.only))
    return outcome


def table(results: dict) -> str:
    names = list(results)
    lines = [f"{'view':<62}" + "".join(f"{n + ' p50':>16}{'p99':>9}" for n in names)]
    for view in next(iter(results.values()))["views"]:
        cells = ""
        for name in names:
            r = results[name]["views"].get(view, {})
            over = "*" if r.get("p99", 0) > TARGET_MS else " "
            cells += f"{r.get('p50', float('nan')):>16.2f}{r.get('p99', float('nan')):>8.2f}{over}"
        lines.append(f"{view:<62}{cells}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=50, help="timed reads per view (default 50)")
    parser.add_argument("--smoke", action="store_true", help="2,000 users, 5,000 events, 3 reads a view")
    parser.add_argument("--sqlite-path", help="the SQLite file (default: a temporary one, removed after)")
    parser.add_argument("--postgres-url", help="the PostgreSQL database (default: a temporary one, dropped after)")
    parser.add_argument("--reuse", action="store_true", help="measure a database built by an earlier run as it is")
    parser.add_argument("--only", default="", metavar="TEXT", help="only the views whose name holds TEXT")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--password", default="mosaic turnip harbor glide quietly",
                        help="the Admin's password (kept with --reuse)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.users, args.events, args.repeats = 2_000, 5_000, 3
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_sqlite:
            path = args.sqlite_path or str(Path(tmp) / "scale.sqlite3")
            results["SQLite"] = on("SQLite", f"sqlite+aiosqlite:///{path}", args, args.password)
        if not args.no_postgres:
            name, url = None, args.postgres_url
            if not url:
                name, url = asyncio.run(throwaway.create("gatehouse_scale", c_collation=True))
            try:
                results["PostgreSQL"] = on("PostgreSQL", url, args, args.password)
            finally:
                if name:
                    asyncio.run(throwaway.drop(name))
    print(f"\n{args.users:,} users, {args.events:,} audit events, {args.repeats} reads a view, one client "
          f"(ms; * p99 over {TARGET_MS} ms)\n")
    print(table(results))
    out = ROOT / "bench" / "results" / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"users": args.users, "events": args.events, "repeats": args.repeats,
                               "load": os.getloadavg(), "results": results}, indent=1, default=str))
    print(f"\nwritten {out.relative_to(ROOT)}")
    failed = [(name, view, m["statuses"]) for name, r in results.items() for view, m in r["views"].items()
              if m["statuses"] != [200]]
    for name, view, statuses in failed:
        print(f"FAILED: {name}, {view} answered {statuses}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
