"""The users table's header checkbox and the key that opens a user's page, in Chromium; the page
has no serious accessibility findings."""
import re

from playwright.async_api import expect

from helpers import axe_violations_of, focused_row, log_in
from web.core import demo


async def test_select_the_page_from_the_header_then_the_whole_filter_and_open_a_user_by_key(
        live_server, browser, page, make_user, db, password_hash):
    admin = await make_user("Admin", username="root.admin")
    await demo.add_demo_users(db, 30, password_hash)
    await log_in(page, live_server, admin["username"], "/users?size=25")

    header = page.get_by_label("Select every row on this page")
    await header.check()
    await expect(page.locator("tbody [data-select]:checked")).to_have_count(25)
    await expect(page.locator("[data-selected-count]")).to_have_text("25")
    await page.locator("tbody [data-select]").first.uncheck()
    await expect(header).to_have_js_property("indeterminate", True)
    await page.get_by_label(re.compile(r"Select all 31 users")).check()
    await expect(page.locator("[data-selected-count]")).to_have_text("31")
    await expect(header).to_be_checked()

    await page.locator("tbody tr[data-row]").first.focus()
    await page.keyboard.press("j")
    name = await focused_row(page).get_attribute("data-username")
    await page.keyboard.press("o")
    await expect(page.locator("h1")).to_have_text(name)
    await expect(page).to_have_url(re.compile(r"/users/\d+\?size=25$"))
    await expect(page.get_by_role("link", name="Back to users")).to_have_attribute("href", "/users?size=25")
    assert await axe_violations_of(browser, page) == []

    await page.get_by_role("link", name=f"Edit {name}").click()
    await expect(page.locator("#users-table tr[data-editing] input[name=username]")).to_have_value(name)
