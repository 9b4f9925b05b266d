"""The users table in Chromium, driven by the keyboard alone."""
import re

import pytest
from playwright.async_api import expect
from sqlalchemy import select

from helpers import axe_violations, focused_row, log_in
from web.core import demo
from web.core.tables import audit_events, users


@pytest.fixture
async def admin(make_user):
    return await make_user("Admin", username="root.admin")


@pytest.fixture
async def many_customers(db, password_hash):
    await demo.add_demo_users(db, 70, password_hash)


async def focused_username(page) -> str:
    return await page.evaluate("document.activeElement.dataset.username || ''")


async def test_search_sort_and_page_by_keyboard_without_reload(live_server, page, admin, many_customers):
    await log_in(page, live_server, admin["username"])
    await page.watch.mark()
    await page.keyboard.press("j")
    await expect(focused_row(page)).to_have_count(1)

    await page.keyboard.press("2")  # sort by email
    await expect(page.locator("#col-email")).to_have_attribute("aria-sort", "ascending")
    await page.keyboard.press("2")
    await expect(page.locator("#col-email")).to_have_attribute("aria-sort", "descending")
    assert "sort=email" in page.url and "dir=desc" in page.url
    await expect(focused_row(page)).to_have_count(1)

    first_page = await page.locator("tbody tr[data-row]").first.get_attribute("id")
    await page.keyboard.press("PageDown")
    await expect(page).to_have_url(re.compile(r"after="))
    await expect(page.locator("tbody tr[data-row]").first).not_to_have_id(first_page)
    await expect(focused_row(page)).to_have_count(1)
    await page.keyboard.press("End")
    await page.keyboard.press("Home")
    await page.keyboard.press("PageUp")
    await expect(page.locator("tbody tr[data-row]").first).to_have_id(first_page)

    await page.keyboard.press("/")
    await expect(page.locator("#users-q")).to_be_focused()
    await page.keyboard.type("ROOT.")
    await expect(page.locator("#users-count")).to_contain_text("1 user matching")
    await expect(page).to_have_url(re.compile(r"q=ROOT\.&sort=email&dir=desc|sort=email&dir=desc&q=ROOT\.|q=ROOT\..*sort=email"))
    await page.keyboard.press("Escape")
    assert await focused_username(page) == "root.admin"
    assert await page.watch.still_marked(), "a full page load happened"

    # The URL restores the state after a reload, and back/forward walk the states.
    await page.reload()
    await expect(page.locator("#users-q")).to_have_value("ROOT.")
    await expect(page.locator("#col-email")).to_have_attribute("aria-sort", "descending")
    await expect(page.locator("tbody tr[data-row]")).to_have_count(1)
    await page.go_back()
    await expect(page).to_have_url(re.compile(r"after="))
    await expect(page.locator("#users-q")).to_have_value("")


async def test_edit_save_and_cancel_by_keyboard(live_server, page, admin, make_user, db):
    await make_user("Customer", username="carla.customer")
    await log_in(page, live_server, admin["username"])
    await page.watch.mark()
    await page.keyboard.press("/")
    await page.keyboard.type("carla")
    await expect(page.locator("tbody tr[data-row]")).to_have_count(1)
    await page.keyboard.press("Escape")

    await page.keyboard.press("Enter")
    await expect(page.locator("input[name=username]")).to_be_focused()
    await page.keyboard.press("Tab")
    await page.keyboard.press("Control+a")
    await page.keyboard.type("not an email")
    await page.keyboard.press("Enter")
    error = page.locator("tr.editing [id$=email-error]")
    await expect(error).to_contain_text("@-sign")
    await expect(page.locator("tr.editing input[name=email]")).to_have_value("not an email")
    await expect(page.locator("tr.editing input[name=email]")).to_be_focused()

    await page.keyboard.press("Control+a")
    await page.keyboard.type("carla@example.org")
    await page.keyboard.press("Enter")
    await expect(page.locator("#toasts")).to_contain_text("Saved carla.customer: email")
    await expect(focused_row(page)).to_contain_text("carla@example.org")

    await page.keyboard.press("F2")
    await expect(page.locator("tr.editing input[name=username]")).to_be_focused()
    await page.keyboard.type("-changed")
    await page.keyboard.press("Escape")
    await expect(page.locator("tr.editing")).to_have_count(0)
    await expect(focused_row(page)).to_contain_text("carla.customer")
    assert await page.watch.still_marked()

    async with db.read() as conn:
        row = (await conn.execute(select(users).where(users.c.username == "carla.customer"))).one()
    assert (row.email, row.version) == ("carla@example.org", 2)


async def test_create_delete_undo_and_bulk_deactivate_by_keyboard(live_server, page, admin, make_user, db):
    for name in ("dora.one", "dora.two", "dora.three"):
        await make_user("Customer", username=name)
    await log_in(page, live_server, admin["username"])
    await page.watch.mark()

    await page.keyboard.press("n")
    await expect(page.locator("#new-username")).to_be_focused()
    await page.keyboard.type("dora.new")
    await page.keyboard.press("Tab")
    await page.keyboard.type("dora.new@example.com")
    await page.keyboard.press("Enter")
    await expect(page.locator("#toasts")).to_contain_text("Invited dora.new: we sent a link to dora.new@example.com.")
    await expect(focused_row(page)).to_contain_text("dora.new")
    await expect(focused_row(page).locator(".badge-invited")).to_have_text("Invited")

    await page.keyboard.press("/")
    await page.keyboard.type("dora.t")
    await expect(page.locator("tbody tr[data-row]")).to_have_count(2)
    await page.keyboard.press("Escape")
    assert await focused_username(page) == "dora.three"
    await page.keyboard.press("Delete")
    dialog = page.locator("#delete-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("dora.three")
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    assert await focused_username(page) == "dora.three"
    await page.keyboard.press("Delete")
    await expect(page.locator("#delete-dialog [data-dialog-cancel]")).to_be_focused()  # the safe choice first
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await expect(page.locator("tbody tr[data-row]")).to_have_count(1)
    await expect(focused_row(page)).to_contain_text("dora.two")
    undo = page.locator("#toasts button", has_text="Undo")
    await undo.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("tbody tr[data-row]")).to_have_count(2)
    await expect(focused_row(page)).to_contain_text("dora.three")

    await page.keyboard.press("x")
    await page.keyboard.press("j")
    await page.keyboard.press("x")
    await expect(page.locator("[data-selected-count]")).to_have_text("2")
    await page.locator("#bulk-action").select_option("deactivate")
    await page.get_by_role("button", name=re.compile("Apply to")).focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#toasts")).to_contain_text("Deactivated 2 users.")
    await expect(page.locator("tbody tr[data-row] .badge-inactive")).to_have_count(2)
    assert await page.watch.still_marked()

    async with db.read() as conn:
        actions = (await conn.execute(select(audit_events.c.action).where(
            audit_events.c.actor_id == admin["id"]).order_by(audit_events.c.id))).scalars().all()
    assert [a for a in actions if a != "login"] == ["create", "delete", "restore", "update", "update"]


async def test_two_admins_editing_the_same_row_get_a_conflict(live_server, browser, page, admin, make_user):
    await make_user("Admin", username="second.admin")
    await make_user("Customer", username="erin.shared")
    other_context = await browser.new_context()
    other = await other_context.new_page()
    try:
        for p, name in ((page, admin["username"]), (other, "second.admin")):
            await log_in(p, live_server, name, "/users?q=erin")
            await p.locator("tr[data-row] [data-action=edit]").click()
            await expect(p.locator("tr.editing")).to_have_count(1)

        await other.locator("tr.editing input[name=email]").fill("theirs@example.com")
        await other.keyboard.press("Enter")
        await expect(other.locator("#toasts")).to_contain_text("Saved erin.shared")

        await page.locator("tr.editing input[name=email]").fill("mine@example.com")
        await page.keyboard.press("Enter")
        conflict = page.locator("tr.conflict")
        await expect(conflict).to_contain_text("Someone else saved this user")
        await expect(conflict.locator(".theirs")).to_contain_text("theirs@example.com")
        await expect(conflict.locator("input[name=email]")).to_have_value("mine@example.com")
        await page.get_by_role("button", name="Overwrite with mine").click()
        await expect(page.locator("tr[data-row]").first).to_contain_text("mine@example.com")
    finally:
        await other_context.close()


async def test_users_page_has_no_serious_accessibility_violations(live_server, browser, admin, many_customers):
    context = await browser.new_context(bypass_csp=True)
    page = await context.new_page()
    await log_in(page, live_server, admin["username"])
    assert await axe_violations(page) == []
    await page.keyboard.press("j")
    await page.keyboard.press("Enter")
    await expect(page.locator("tr.editing")).to_have_count(1)
    assert await axe_violations(page) == []
    await page.keyboard.press("?")  # typed into the field: shortcuts wait while typing
    await expect(page.locator("#help-dialog")).to_be_hidden()
    await page.keyboard.press("Escape")
    await expect(focused_row(page)).to_have_count(1)
    await page.keyboard.press("?")
    await expect(page.locator("#help-dialog")).to_be_visible()
    assert await axe_violations(page) == []
    await context.close()
