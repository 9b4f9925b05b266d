#!/usr/bin/env python3
"""Where a request's CPU goes: each stage of the users table's requests, in this process.

    .venv/bin/python bench/stages.py                          # 100,000 users, 400 requests x 5 rounds
    .venv/bin/python bench/stages.py --users 10000 --requests 200 --rounds 3

Fills a fresh SQLite file with demo users, signs an Admin in and sends, one after the other,
the requests `bench/run.py` drives with wrk: the deep page's htmx fragment, the first page,
the whole page (a first load) and a search, gzip'd as a browser asks. Each stage's function
is wrapped, wherever the app holds it (module globals, the request hooks), with a count of
the process's CPU time (time.process_time: the threads included, so a read sent to
aiosqlite's thread is counted): the session check, the live position, the count and the
page, the template, gzip; "the rest" is the request's CPU minus theirs (Quart, the other
hooks, the test client: no HTTP). Requests take turns by round; each figure is the median
of its rounds. Results: docs/PERFORMANCE.md, "Issue 15: where the targets stand".
"""
import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from web import create_app  # noqa: E402
from web.accounts import sessions  # noqa: E402
from web.core import compress, render  # noqa: E402
from web.core.config import Config  # noqa: E402
from web.core.db import Database  # noqa: E402
from web.core.tables import users  # noqa: E402
from web.live import stream  # noqa: E402
from web.users import queries  # noqa: E402

from rows import demo_sqlite, signed_in_client  # noqa: E402  (bench/, beside this script)

STAGES = (
    ("session check", sessions.load_user),
    ("live position", stream.live_after),
    ("count and page (queries)", queries.load_page),
    ("template", render.render),
    ("gzip", compress.compress),
)
FRAGMENT = {"HX-Request": "true", "HX-Target": "users-table"}


def wrap(function, totals: dict, name: str):
    async def timed(*args, **kwargs):
        begun = time.process_time()
        try:
            return await function(*args, **kwargs)
        finally:
            totals[name] += time.process_time() - begun
    return timed


def instrument(app, totals: dict) -> None:
    """Puts each stage's wrapper wherever the app or a module holds the function."""
    for name, function in STAGES:
        timed = wrap(function, totals, name)
        for module in [m for key, m in sys.modules.items() if key.startswith("web") and m]:
            for attribute, value in list(vars(module).items()):
                if value is function:
                    setattr(module, attribute, timed)
        for hooks in (*app.before_request_funcs.values(), *app.after_request_funcs.values()):
            hooks[:] = [timed if hook is function else hook for hook in hooks]


async def measure(app, scenarios: dict, requests: int, rounds: int) -> dict:
    totals = defaultdict(float)
    instrument(app, totals)
    client, _ = await signed_in_client(app)
    results = {name: defaultdict(list) for name in scenarios}
    for name, (path, headers) in scenarios.items():  # warm: templates compiled, counts reused
        for _ in range(20):
            reply = await client.get(path, headers={**headers, "Accept-Encoding": "gzip"})
            assert reply.status_code == 200, (name, reply.status_code)
    for _ in range(rounds):
        for name, (path, headers) in scenarios.items():
            totals.clear()
            begun = time.process_time()
            for _ in range(requests):
                await client.get(path, headers={**headers, "Accept-Encoding": "gzip"})
            whole = (time.process_time() - begun) / requests * 1000
            staged = {stage: totals[stage] / requests * 1000 for stage, _ in STAGES}
            staged["the rest"] = whole - sum(staged.values())
            staged["whole request"] = whole
            for stage, ms in staged.items():
                results[name][stage].append(ms)
    return {name: {stage: statistics.median(values) for stage, values in stages.items()}
            for name, stages in results.items()}


def report(figures: dict) -> str:
    names = list(figures)
    lines = ["| stage | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for stage in [*(s for s, _ in STAGES), "the rest", "whole request"]:
        cells = []
        for name in names:
            ms, whole = figures[name][stage], figures[name]["whole request"]
            cells.append(f"{ms:.2f}" if stage == "whole request" else f"{ms:.2f} ({ms / whole:.0%})")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--search", default="ada")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="h_stages_") as tmp:
        url = await demo_sqlite(Path(tmp) / "stages.sqlite3", args.users)
        db = Database(url)
        try:
            by_username = queries.SORTS["username"]
            async with db.read() as conn:  # four fifths in, as bench/run.py's deep page
                row = (await conn.execute(select(users).order_by(by_username.key).offset(args.users * 4 // 5)
                                          .limit(1))).first()
            deep = queries.TableState(after=queries.encode_cursor(by_username, row), page=args.users * 4 // 5 // 50)
        finally:
            await db.dispose()
        scenarios = {
            "deep page (fragment)": (deep.url(), FRAGMENT),
            "page 1 (fragment)": ("/users", FRAGMENT),
            f"search {args.search} (fragment)": (queries.TableState(q=args.search).url(), FRAGMENT),
            "whole page": ("/users", {}),
        }
        app = create_app(Config(database_url=url, secret_key=secrets.token_urlsafe(48)))
        async with app.test_app():
            figures = await measure(app, scenarios, args.requests, args.rounds)
        print(f"{args.users:,} demo users, SQLite, one client in-process; ms of CPU per request "
              f"(share), median of {args.rounds} rounds of {args.requests}")
        print(report(figures))


if __name__ == "__main__":
    asyncio.run(main())
