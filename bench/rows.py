#!/usr/bin/env python3
"""What the users table's rows cost: bytes per row and per page (raw and gzip'd as the server
sends them), htmx attributes per row, and the time Jinja takes to render a page of them.

    .venv/bin/python bench/rows.py                     # 1,000 demo users, pages of 50, 1,000 renders
    .venv/bin/python bench/rows.py --renders 3000 --rounds 5

Fills a fresh SQLite file with demo users, signs an Admin in, and asks the real app in this
process (Quart's test client) for the table's first page as htmx does (the #users-table
fragment) and as a first load (the whole page); then, in one request's context, renders the
users_table block of that page (the rows, the summary, the pager: what the fragment sends)
--renders times, --rounds times over, with the app's synchronous templates (web/core/render.py).
Prints the median of the rounds. Results: docs/PERFORMANCE.md, "Rows".
"""
import argparse
import asyncio
import gzip
import re
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jinja2_fragments import render_block  # noqa: E402
from quart import current_app  # noqa: E402
from quart_auth import generate_auth_token  # noqa: E402
from sqlalchemy import select  # noqa: E402

from web import create_app  # noqa: E402
from web.accounts import sessions  # noqa: E402
from web.core.config import Config  # noqa: E402
from web.core.db import Database  # noqa: E402
from web.core.demo import add_demo_users  # noqa: E402
from web.core.render import templates  # noqa: E402
from web.core.tables import ROLES, users  # noqa: E402
from web.users.edits import EDITABLE  # noqa: E402
from web.users.queries import COLUMNS, PAGE_SIZES, TableState, load_page  # noqa: E402

ROW = re.compile(r'<tr id="user-\d+".*?</tr>', re.S)
HX_ATTRIBUTE = re.compile(r"\shx-[\w-]+=")
COOKIE = "gatehouse"  # QUART_AUTH_COOKIE_NAME outside production


async def signed_in_client(app):
    async with app.db.write() as conn:
        admin = (await conn.execute(select(users.c.id).where(users.c.role == "Admin").limit(1))).scalar_one()
        token = await sessions.start(conn, admin, False, "bench", "127.0.0.1", app.config["GATEHOUSE"])
    client = app.test_client()
    cookie = generate_auth_token(client, token)
    client.set_cookie("localhost", COOKIE, cookie, httponly=True, samesite="Lax")
    return client, cookie


async def demo_sqlite(path: Path, users: int) -> str:
    """The URL of a new SQLite file at `path` holding `users` demo users."""
    url = f"sqlite+aiosqlite:///{path}"
    db = Database(url)
    try:
        await db.create_schema()
        await add_demo_users(db, users, "not a real hash")
    finally:
        await db.dispose()
    return url


async def sent(client, headers: dict) -> tuple[bytes, int]:
    """The first page's body, and how many bytes it took gzip'd as the server sends it."""
    plain = await client.get("/users", headers=headers)
    packed = await client.get("/users", headers={**headers, "Accept-Encoding": "gzip"})
    assert plain.status_code == packed.status_code == 200
    body, wire = await plain.get_data(), await packed.get_data()
    assert packed.headers.get("Content-Encoding") == "gzip" and gzip.decompress(wire) != b""
    return body, len(wire)


def render_seconds(context: dict, renders: int) -> float:
    """CPU seconds to render the table block `renders` times."""
    env = templates()
    start = time.process_time()
    for _ in range(renders):
        render_block(env, "users/index.html", "users_table", **context)
    return time.process_time() - start


async def measure(app, renders: int, rounds: int) -> None:
    client, cookie = await signed_in_client(app)
    fragment, fragment_wire = await sent(client, {"HX-Request": "true", "HX-Target": "users-table"})
    whole, whole_wire = await sent(client, {})
    rows = ROW.findall(fragment.decode())
    sizes = [len(row.encode()) for row in rows]
    attributes = [len(HX_ATTRIBUTE.findall(row)) for row in rows]
    print(f"  rows on the page: {len(rows)}")
    print(f"  bytes per row: median {statistics.median(sizes):,.0f}, max {max(sizes):,}, min {min(sizes):,}")
    print(f"  hx-* attributes per row: {statistics.median(attributes):.0f} (max {max(attributes)})")
    print(f"  #users-table fragment: {len(fragment):,} bytes, {fragment_wire:,} gzip'd")
    print(f"  whole page (first load): {len(whole):,} bytes, {whole_wire:,} gzip'd")

    async with app.test_request_context("/users", headers={"Cookie": f"{COOKIE}={cookie}"}):
        await app.preprocess_request()
        view = TableState()
        async with current_app.db.read() as conn:
            page = await load_page(conn, view)
        context = {"view": view, "page": page, "columns": COLUMNS, "roles": ROLES, "page_sizes": PAGE_SIZES,
                   "editable": EDITABLE["Admin"], "editing": None, "creating": None}
        await app.update_template_context(context)
        html = render_block(templates(), "users/index.html", "users_table", **context)
        assert len(ROW.findall(html)) == len(page.rows), "the rendered block holds every row"
        render_seconds(context, max(1, renders // 10))  # warm-up
        per_page = [render_seconds(context, renders) / renders * 1000 for _ in range(rounds)]
    ms = statistics.median(per_page)
    print(f"  render the block ({len(page.rows)} rows), {renders:,} times x {rounds}: median {ms:.3f} ms a page "
          f"({ms * 1000 / len(page.rows):.1f} µs a row; rounds {', '.join(f'{r:.3f}' for r in per_page)})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--renders", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="h_rows_") as tmp:
        url = await demo_sqlite(Path(tmp) / "rows.sqlite3", args.users)
        app = create_app(Config(database_url=url, secret_key=secrets.token_urlsafe(48)))
        try:
            print(f"{args.users:,} demo users, SQLite, the first page of 50 as an Admin sees it")
            await measure(app, args.renders, args.rounds)
        finally:
            await app.db.dispose()


if __name__ == "__main__":
    asyncio.run(main())
