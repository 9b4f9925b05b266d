"""axe-core (tests/vendor, see static/VENDORED.md) over every page and state, in light and in
dark: no serious or critical finding anywhere. One walk per theme, in one page: the states
are reached by keyboard as a person would (dialogs, the editor, a conflict, the palette)."""
import pytest
from playwright.async_api import expect
from sqlalchemy import update

from helpers import axe_violations, execute, focused_row, log_in
from web.core.tables import users

pytestmark = pytest.mark.browser


# The dark theme changes colours only (app.css: light-dark()), so its walk runs axe's rules
# about colour; the light walk runs them all.
COLOUR_RULES = ("color-contrast", "link-in-text-block")
DARK_BACKGROUND = "rgb(18, 21, 27)"


@pytest.fixture(params=["light", "dark"])
async def theme(request):
    return request.param


@pytest.fixture
async def themed_page(theme, browser):
    """A page with the device in `theme` (the accounts keep "same as this device"), allowed to
    take axe in past the CSP."""
    context = await browser.new_context(bypass_csp=True, color_scheme=theme)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    yield page
    await context.close()


class Findings:
    """What axe found, by state, gathered over the whole walk so that one run reports all."""

    def __init__(self, page, rules=()):
        self.page = page
        self.rules = rules
        self.found = {}

    async def check(self, state: str):
        if violations := await axe_violations(self.page, self.rules):
            self.found[state] = violations


async def test_every_page_and_state_passes_axe(live_server, theme, themed_page, make_user, db):
    page = themed_page
    findings = Findings(page, COLOUR_RULES if theme == "dark" else ())
    admin = await make_user("Admin", username="root.admin")
    zelda = await make_user("Customer", username="zelda.quinn", email="zelda.quinn.with.a.long.address@lighthouse.example")
    await make_user("Manager", username="mona.manager")

    for path in ("/login", "/register", "/forgot-password"):
        await page.goto(live_server + path)
        await findings.check(path)
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (background == DARK_BACKGROUND) == (theme == "dark"), background

    await log_in(page, live_server, admin["username"], "/dashboard")
    await findings.check("/dashboard")
    for path in ("/audit", "/users/import", "/profile", f"/users/{zelda['id']}", "/users/999999/edit"):
        await page.goto(live_server + path)
        await findings.check(path)

    await page.goto(live_server + "/users")
    await findings.check("/users")
    await page.keyboard.press("?")
    await expect(page.locator("#help-dialog")).to_be_visible()
    await findings.check("/users: keyboard help")
    await page.keyboard.press("Escape")

    await page.keyboard.press("n")
    await expect(page.locator("#user-new input").first).to_be_focused()
    await findings.check("/users: new user row")
    await page.keyboard.press("Escape")

    row = page.locator(f"#user-{zelda['id']}")
    await row.focus()
    await page.keyboard.press("Delete")
    await expect(page.locator("#delete-dialog")).to_be_visible()
    await findings.check("/users: delete dialog")
    await page.keyboard.press("Escape")
    await expect(focused_row(page)).to_have_count(1)

    await page.keyboard.press("Enter")
    await expect(row.locator("input").first).to_be_focused()
    await findings.check("/users: editing a row")
    # Someone else saves first: the next save meets a conflict.
    await execute(db, update(users).where(users.c.id == zelda["id"]).values(
        email="zelda@elsewhere.example", version=users.c.version + 1))
    await page.keyboard.press("Enter")
    await expect(page.locator(".user-row.conflict")).to_have_count(1)
    await findings.check("/users: conflict")
    await page.keyboard.press("Escape")

    await page.keyboard.press("Control+k")
    await page.keyboard.type("zelda")
    await expect(page.locator(f"#palette-user-{zelda['id']}")).to_be_visible()
    await findings.check("command palette with a user found")

    assert findings.found == {}
