"""The command palette in Chromium: Ctrl+K anywhere, the combobox by keyboard, focus given
back, role-aware, and the shortcut setting that leaves only modifier shortcuts."""
import re

import pytest
from playwright.async_api import expect
from sqlalchemy import update

from helpers import execute, focused_row, log_in, user_row
from web.core.tables import users

pytestmark = pytest.mark.browser


def options(page):
    return page.locator("#palette-list [role=option]:visible")


async def active_label(page) -> str:
    active = await page.get_attribute("#palette-input", "aria-activedescendant")
    return await page.locator(f"#{active} .palette-label").inner_text()


async def test_the_palette_finds_pages_actions_and_users_and_gives_focus_back(live_server, page, make_user, db):
    admin = await make_user("Admin", username="root.admin")
    zelda = await make_user("Customer", username="zelda.quinn", email="zq@lighthouse.example")
    await log_in(page, live_server, admin["username"])
    await page.keyboard.press("j")
    await expect(focused_row(page)).to_have_count(1)

    await page.keyboard.press("Control+k")
    palette = page.locator("#palette")
    await expect(palette).to_be_visible()
    await expect(page.locator("#palette-input")).to_be_focused()
    await page.keyboard.type("audit")
    await expect(options(page)).to_have_count(2)
    assert await active_label(page) == "Audit log"
    await page.keyboard.press("ArrowDown")
    assert await active_label(page) == "Export the audit log (CSV)"
    await page.keyboard.press("ArrowUp")
    assert await active_label(page) == "Audit log"
    await page.keyboard.press("Escape")
    await expect(palette).to_be_hidden()
    await expect(focused_row(page)).to_have_count(1)

    # Users by any part of the address, listed after what matched by name.
    await page.keyboard.press("Control+k")
    await page.keyboard.type("lighthouse")
    user = page.locator(f"#palette-user-{zelda['id']}")
    await expect(user).to_contain_text("zelda.quinn")
    await expect(user).to_contain_text("zq@lighthouse.example")
    assert await active_label(page) == "zelda.quinn"
    assert await user.get_attribute("data-href") == f"/users/{zelda['id']}"

    # The theme, saved for the account, and the palette closes with focus back in place.
    await page.fill("#palette-input", "theme")
    async with page.expect_response("**/profile/preferences") as saved:
        await page.keyboard.press("Enter")
    assert (await saved.value).ok
    await expect(palette).to_be_hidden()
    await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    # The account's choice wins over the device's (light here).
    assert await page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(18, 21, 27)"
    await expect(focused_row(page)).to_have_count(1)
    assert (await user_row(db, admin["id"])).theme == "dark"

    await page.keyboard.press("Control+k")
    await page.keyboard.type("audit log")
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(live_server + "/audit")


async def test_a_customer_is_offered_no_admin_actions(live_server, page, make_user):
    customer = await make_user("Customer")
    await log_in(page, live_server, customer["username"], "/dashboard")
    await page.keyboard.press("Control+k")
    await expect(page.locator("#palette-input")).to_be_focused()
    await expect(options(page).locator(".palette-label")).to_have_text(
        ["Dashboard", "Profile and preferences", "Toggle theme (light or dark)", "Log out"])
    await page.keyboard.type("user")
    await expect(options(page)).to_have_count(0)
    await expect(page.locator("[data-palette-status]")).to_have_text("Nothing matches.")
    await page.fill("#palette-input", "log out")
    await page.keyboard.press("Enter")
    await expect(page.locator(".nav-user")).to_contain_text("Log in")
    await expect(page.locator("#palette")).to_have_count(0)


async def test_with_single_key_shortcuts_off_only_modifier_shortcuts_work(live_server, page, make_user, db):
    manager = await make_user("Manager")
    await execute(db, update(users).where(users.c.id == manager["id"]).values(single_key_shortcuts=False))
    await log_in(page, live_server, manager["username"])
    await expect(page.locator("html")).to_have_attribute("data-single-key-shortcuts", "off")
    await page.locator("body").press("/")
    await expect(page.locator("#users-q")).not_to_be_focused()
    await page.keyboard.press("n")
    await page.keyboard.press("?")
    await expect(page.locator("#user-new")).to_have_count(0)
    await expect(page.locator("#help-dialog")).to_be_hidden()

    await page.keyboard.press("Control+k")
    await page.keyboard.type("new user")
    new_user = options(page).filter(has_text="New user")
    await expect(new_user).to_have_count(1)
    await expect(new_user.locator("kbd")).to_be_hidden()  # no single key to show
    await page.keyboard.press("Enter")
    await expect(page.locator("#user-new input").first).to_be_focused()

    # Turned on again in the profile: the page takes it at once, focus stays on the button.
    await page.goto(live_server + "/profile")
    await page.locator("#preferences-single-keys").check()
    await page.locator("#preferences-save").click()
    await expect(page.locator("#toasts")).to_contain_text("Preferences saved.")
    await expect(page.locator("#preferences-save")).to_be_focused()
    assert await page.get_attribute("html", "data-single-key-shortcuts") is None
