"""Layout in Chromium, at a phone's width and at desktop widths: no page scrolls sideways and
nothing one can focus is cut off by a box that clips it, in every page and state; and the
users table's busy states while a request is out."""
import asyncio
import re

import pytest
from playwright.async_api import expect
from sqlalchemy import update

from conftest import ROOT
from helpers import focused_row, layout_problems, log_in
from web.core import demo
from web.core.tables import users

LONG_EMAIL = "maximiliana.konstantinopoulou-vandersteen@accounts.subsidiary.example-holdings.com"


@pytest.fixture
async def admin(make_user):
    return await make_user("Admin", username="root.admin")


@pytest.fixture
async def people(db, make_user, password_hash):
    await demo.add_demo_users(db, 30, password_hash)
    return await make_user("Customer", username="maximiliana.k", email=LONG_EMAIL)


async def fits(page, state: str) -> None:
    problems = await layout_problems(page)
    assert problems == [], f"{state} at {page.viewport_size['width']} px: {problems}"


async def visit(page, url: str, state: str) -> None:
    await page.goto(url)
    await fits(page, state)


async def contrast_problems(page, selector: str) -> list:
    """axe-core's colour contrast findings inside `selector` (the page's CSP bypassed)."""
    await page.add_script_tag(path=str(next((ROOT / "tests" / "vendor").glob("axe-*.min.js"))))
    result = await page.evaluate("(s) => axe.run(s, {runOnly: ['color-contrast']})", selector)
    return [[n["target"], n["any"][0]["message"]] for v in result["violations"] for n in v["nodes"]]


# Dark at one desktop width: the colours change, the layout does not.
@pytest.mark.parametrize("width,scheme", [(390, "light"), (1024, "light"), (1280, "dark")])
async def test_every_page_and_state_fits_the_window(live_server, browser, db, admin, people, width, scheme):
    dark = scheme == "dark"
    context = await browser.new_context(viewport={"width": width, "height": 800}, color_scheme=scheme,
                                        bypass_csp=dark)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    phone = width < 600
    try:
        for path in ("/", "/login", "/register", "/forgot-password", "/reset-password/not-a-token",
                     "/invitation/not-a-token"):
            await visit(page, live_server + path, path)

        await log_in(page, live_server, admin["username"])
        await fits(page, "users")
        search = page.locator("#users-q")
        if phone:  # the filters wait behind their summary; the table comes first
            await expect(search).to_be_hidden()
            await page.locator(".filter-panel > summary").click()
            await fits(page, "users, filters open")
        await expect(search).to_be_visible()

        row = page.locator(f"tr[data-username='{people['username']}']")
        await row.locator("details[data-menu] > summary").click()
        await expect(row.locator("[data-action=delete]")).to_be_visible()
        await fits(page, "users, a row's menu open")
        await page.keyboard.press("Escape")
        await expect(row.locator("[data-action=delete]")).to_be_hidden()

        await row.focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("tr.editing input[name=username]")).to_be_focused()
        await fits(page, "editing")
        email = page.locator("tr.editing input[name=email]")
        await email.focus()
        if not phone:  # the whole address in view: the input is as wide as it
            assert await email.evaluate("el => el.scrollWidth <= el.clientWidth"), "the email is cut off"

        async with db.write() as conn:  # someone else saves meanwhile
            await conn.execute(update(users).where(users.c.id == people["id"]).values(
                username="maximiliana.theirs", version=users.c.version + 1))
        await page.keyboard.press("Enter")
        await expect(page.locator("tr.conflict")).to_contain_text("Someone else saved this user")
        await fits(page, "conflict")
        await page.get_by_role("button", name="Overwrite with mine").focus()
        await page.keyboard.press("Enter")
        await expect(focused_row(page)).to_contain_text("maximiliana.k")

        await page.keyboard.press("n")
        await expect(page.locator("#new-username")).to_be_focused()
        await fits(page, "new user")
        await page.keyboard.press("Escape")
        await expect(focused_row(page)).to_have_count(1)

        await page.keyboard.press("Delete")
        await expect(page.locator("#delete-dialog")).to_be_visible()
        await expect(page.locator("#delete-dialog [data-dialog-cancel]")).to_be_focused()
        await fits(page, "delete dialog")
        if dark:  # the danger button's white-on-light-red was 2.28:1
            assert await contrast_problems(page, "#delete-dialog") == []
        await page.keyboard.press("Escape")
        await page.keyboard.press("?")
        await expect(page.locator("#help-dialog")).to_be_visible()
        await fits(page, "shortcuts dialog")
        await page.keyboard.press("Escape")

        await visit(page, f"{live_server}/users/{people['id']}/delete", "delete page (no JavaScript)")
        await visit(page, f"{live_server}/audit", "audit log")
        if phone:
            await page.locator(".filter-panel > summary").click()
            await expect(page.locator("#audit-actor")).to_be_visible()
            await fits(page, "audit log, filters open")
        revert = page.locator("[data-action=revert]").first
        await revert.click()
        await expect(page.locator("form.revert-panel")).to_be_visible()
        await fits(page, "audit log, reverting an event")

        for path in ("/dashboard", "/profile", f"/users/{people['id']}", "/users/import", "/mail"):
            await visit(page, live_server + path, path)
    finally:
        await context.close()


class Held:
    """A route handler that holds the matching requests until released: latency injected by
    the test, as long as the test needs, without a sleep."""

    def __init__(self, method: str = "GET"):
        self.method = method
        self.seen = 0
        self.released = asyncio.Event()

    async def __call__(self, route):
        if route.request.method != self.method:
            await route.continue_()
            return
        self.seen += 1
        await self.released.wait()
        await route.continue_()


async def test_search_edit_and_save_show_they_are_busy_and_save_goes_once(live_server, page, admin, make_user):
    carla = await make_user("Customer", username="carla.busy")
    await log_in(page, live_server, admin["username"])
    table = page.locator("#users-table")

    search = Held()
    await page.route(re.compile(r"/users\?.*q=carla"), search)
    await page.locator("#users-q").fill("carla")
    await expect(table).to_have_attribute("aria-busy", "true")
    await expect(page.locator("#users-filters")).to_have_class(re.compile(r"\bhtmx-request\b"))
    search.released.set()
    await expect(page.locator("tbody tr[data-row]")).to_have_count(1)
    await expect(table).not_to_have_attribute("aria-busy", "true")

    row = page.locator(f"#user-{carla['id']}")
    editor = Held()
    await page.route(re.compile(rf"/users/{carla['id']}/edit$"), editor)
    await row.focus()
    await page.keyboard.press("Enter")
    await expect(row).to_have_attribute("aria-busy", "true")
    await expect(row.locator("[data-action=edit]")).to_have_class(re.compile(r"\bhtmx-request\b"))
    editor.released.set()
    await expect(page.locator("tr.editing input[name=username]")).to_be_focused()
    email = page.locator("tr.editing input[name=email]")

    save = Held("POST")
    await page.route(re.compile(rf"/users/{carla['id']}$"), save)
    await email.fill("carla.busy@example.org")
    await page.keyboard.press("Enter")
    button = page.locator("tr.editing button[type=submit]")
    await expect(button).to_be_disabled()
    await expect(row).to_have_attribute("aria-busy", "true")
    await page.keyboard.press("Enter")  # a second press while the first is out
    await button.click(force=True)  # force: aria-disabled, the click still reaches it
    assert save.seen == 1
    save.released.set()
    await expect(page.locator("#toasts")).to_contain_text("Saved carla.busy")
    await expect(focused_row(page)).to_contain_text("carla.busy@example.org")
    assert save.seen == 1
