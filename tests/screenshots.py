"""Screenshots of every page and state at 390, 1,280 and 1,920 px, light and dark, for a person
to look at (not run by the suite):

    .venv/bin/python tests/screenshots.py [--out DIR] [--url URL --user NAME --password PW]

Without --url it starts the app as the tests do: Hypercorn on a fresh SQLite file holding 60
demo users, one with a long email, and an Admin to log in as. Files are named
<width>-<scheme>-<state>.png, whole pages (not just the window).
"""
import argparse
import asyncio
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import CHROMIUM, PASSWORD, QUIET, _create_schema, hypercorn  # noqa: E402
from web.accounts import passwords, queries as user_queries  # noqa: E402
from web.core import demo  # noqa: E402
from web.core.db import Database  # noqa: E402

WIDTHS = (390, 1280, 1920)
SCHEMES = ("light", "dark")
LONG_EMAIL = "maximiliana.konstantinopoulou-vandersteen@accounts.subsidiary.example-holdings.com"


async def seed(url: str) -> None:
    await _create_schema(url)
    db = Database(url)
    hashed = passwords.hasher.hash(PASSWORD)
    async with db.write() as conn:
        await user_queries.create_user(conn, "root.admin", "root.admin@example.com", hashed, "Admin", True, confirmed=True)
        await user_queries.create_user(conn, "maximiliana.k", LONG_EMAIL, hashed, "Customer", True, confirmed=True)
    await demo.add_demo_users(db, 60, hashed)
    await db.dispose()


def shoot(page, out: Path, name: str) -> None:
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)


def states(page, base: str, user: str, password: str, phone: bool):
    """Yields the name of each state once the page shows it."""
    for path in ("/login", "/register", "/forgot-password"):
        page.goto(base + path)
        yield path.strip("/")
    page.goto(f"{base}/login?next=/users")
    page.fill("#login-identifier", user)
    page.fill("#login-password", password)
    page.keyboard.press("Enter")
    page.wait_for_url(base + "/users")
    yield "users"
    if phone:
        page.locator(".filter-panel > summary").click()
        yield "users-filters"
    row = page.locator("tr[data-row]").nth(1)
    row.locator("details[data-menu] > summary").click()
    yield "users-menu"
    page.keyboard.press("Escape")
    row.focus()
    page.keyboard.press("Enter")
    page.locator("tr.editing input[name=username]").wait_for()
    yield "users-editing"
    page.keyboard.press("Escape")
    page.locator("tr[data-row]:focus:not(.editing)").wait_for()
    page.keyboard.press("n")
    page.locator("#new-username").wait_for()
    yield "users-new"
    page.keyboard.press("Escape")
    page.locator("tr[data-row]:focus").wait_for()
    page.keyboard.press("Delete")
    page.locator("#delete-dialog").wait_for()
    yield "users-delete-dialog"
    page.keyboard.press("Escape")
    user_id = row.get_attribute("data-id")
    for path in ("/audit", "/dashboard", "/profile", f"/users/{user_id}", "/users/import", "/mail"):
        page.goto(base + path)
        yield path.strip("/").replace("/", "-")
        if path == "/audit" and phone:
            page.locator(".filter-panel > summary").click()
            yield "audit-filters"


def run(base: str, user: str, password: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        for width in WIDTHS:
            for scheme in SCHEMES:
                context = browser.new_context(viewport={"width": width, "height": 844 if width < 600 else 1000},
                                              color_scheme=scheme)
                page = context.new_page()
                for state in states(page, base, user, password, width < 600):
                    shoot(page, out, f"{width}-{scheme}-{state}")
                context.close()
        browser.close()
    print(f"{len(list(out.glob('*.png')))} screenshots in {out}")


def main(argv=None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--out", type=Path, default=Path("screenshots"))
    args.add_argument("--url", help="a running server (default: start one)")
    args.add_argument("--user", default="root.admin")
    args.add_argument("--password", default=PASSWORD)
    options = args.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        if options.url:
            server = nullcontext(options.url)
        else:
            database_url = f"sqlite+aiosqlite:///{work}/screenshots.sqlite3"
            asyncio.run(seed(database_url))
            server = hypercorn(database_url, Path(work), **QUIET)
        with server as base:
            run(base, options.user, options.password, options.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
