"""The audit log in Chromium: filtering and paging by keyboard, a user's history from the users
table, local times, accessibility, and the target field's suggestions."""
import re
from datetime import datetime, timedelta

import pytest
from playwright.async_api import expect

from helpers import axe_violations, event_row, focused_row, insert_events, log_in
from web.core.db import utcnow

ADMIN = "root.admin"
CREATED = 120  # the Admin's "create" events: pages of 50, 50 and 20


@pytest.fixture
async def admin(make_user):
    return await make_user("Admin", username=ADMIN)


@pytest.fixture
async def history(db, admin, make_user):
    """120 creations by the Admin and 30 logins by someone else, interleaved, all in the last days."""
    other = await make_user("Customer", username="other.person")
    start = utcnow() - timedelta(days=2)
    rows = [event_row(start + timedelta(minutes=10 * n), actor=admin, action="create", target_id=other["id"],
                      changes={"username": [None, f"made{n}"]}) for n in range(CREATED)]
    rows += [event_row(start + timedelta(minutes=10 * n + 5), actor=other, action="login", target_id=other["id"],
                       ip="192.0.2.7") for n in range(30)]
    await insert_events(db, rows)
    return other


def rows(page):
    return page.locator("#audit-rows tr[data-row]")


async def focused_id(page) -> str:
    await expect(focused_row(page)).to_have_count(1)
    return await focused_row(page).get_attribute("id")


async def test_filter_and_page_the_log_by_keyboard_without_reload(live_server, page, admin, history):
    await log_in(page, live_server, ADMIN, "/audit")
    await expect(rows(page)).to_have_count(50)
    await page.watch.mark()

    await page.keyboard.press("/")
    actor = page.locator("#audit-actor")
    await expect(actor).to_be_focused()
    await page.keyboard.type(ADMIN)
    await expect(page).to_have_url(re.compile(r"/audit\?actor=root\.admin$"))
    await expect(page.locator("#audit-rows")).not_to_contain_text("other.person")
    await expect(rows(page)).to_have_count(50)
    await expect(rows(page).first).to_contain_text("Logged in")  # the login through the form
    await expect(actor).to_be_focused()

    await page.keyboard.press("Tab")
    action = page.locator("#audit-action")
    await expect(action).to_be_focused()
    await page.keyboard.press("ArrowDown")
    await expect(action).to_have_value("create")
    await expect(page).to_have_url(re.compile(r"/audit\?actor=root\.admin&action=create$"))
    await expect(page.locator("#audit-rows")).not_to_contain_text("Logged in")
    await expect(rows(page)).to_have_count(50)
    for cell in await page.locator("#audit-rows tr[data-row] td:nth-child(3)").all_inner_texts():
        assert cell.strip() == "Created"

    # Back to the field, then Escape to the events.
    await page.keyboard.press("Shift+Tab")
    await expect(actor).to_be_focused()
    await page.keyboard.press("Escape")
    ids = [await r.get_attribute("id") for r in await rows(page).all()]
    assert await focused_id(page) == ids[0]
    await page.keyboard.press("j")
    await page.keyboard.press("j")
    assert await focused_id(page) == ids[2]
    await page.keyboard.press("k")
    assert await focused_id(page) == ids[1]

    await page.keyboard.press("PageDown")
    await expect(page).to_have_url(re.compile(r"after="))
    await expect(rows(page).first).not_to_have_id(ids[0])
    second = await rows(page).first.get_attribute("id")
    assert await focused_id(page) == second
    assert second not in ids
    await page.keyboard.press("PageDown")
    await expect(rows(page)).to_have_count(CREATED - 100)
    assert await focused_id(page) == await rows(page).first.get_attribute("id")
    await page.keyboard.press("PageUp")
    await expect(rows(page).first).to_have_id(second)
    assert await focused_id(page) == second
    await page.keyboard.press("PageUp")
    await expect(rows(page).first).to_have_id(ids[0])
    assert await focused_id(page) == ids[0]
    await expect(rows(page)).to_have_count(50)
    assert "actor=root.admin" in page.url and "action=create" in page.url
    assert await page.watch.still_marked(), "a full page load happened"
    assert page.watch.console_errors == []

    # The address holds the state: a reload shows the same filters and events.
    await page.reload()
    await expect(actor).to_have_value(ADMIN)
    await expect(action).to_have_value("create")
    await expect(rows(page)).to_have_count(50)
    await expect(rows(page).first).to_have_id(ids[0])

    help_dialog = page.locator("#help-dialog")
    await expect(help_dialog).to_be_hidden()
    await page.keyboard.press("?")
    await expect(help_dialog).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(help_dialog).to_be_hidden()


async def test_escape_from_any_filter_goes_back_to_the_events(live_server, page, admin, history):
    await log_in(page, live_server, ADMIN, "/audit")
    await page.keyboard.press("/")
    await page.keyboard.press("Tab")
    await expect(page.locator("#audit-action")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(focused_row(page)).to_have_count(1, timeout=1000)


async def test_h_on_a_users_row_opens_their_history_without_a_page_load(live_server, page, admin, history, make_user, db):
    aaron = await make_user("Customer", username="aaron.first")  # first in the table, by username
    now = utcnow()
    await insert_events(db, [
        event_row(now - timedelta(hours=3), actor=admin, action="create", target_id=aaron["id"],
                  changes={"username": [None, "aaron.first"]}),
        event_row(now - timedelta(hours=2), actor=admin, action="update", target_id=aaron["id"],
                  changes={"email": ["a@x.test", "b@x.test"]}),
        event_row(now - timedelta(hours=1), actor=aaron, action="login", target_id=aaron["id"]),
    ])
    await log_in(page, live_server, ADMIN, "/users")
    await page.watch.mark()
    await page.keyboard.press("j")
    await expect(focused_row(page)).to_have_attribute("data-username", "aaron.first")
    await page.keyboard.press("h")
    await expect(page).to_have_url(f"{live_server}/audit?target_type=user&target_id={aaron['id']}")
    await expect(page.locator("#audit-table")).to_contain_text("History of aaron.first")
    await expect(rows(page)).to_have_count(3)
    # The whole audit page replaced the users page: not put inside the users table.
    assert await page.locator('nav[aria-label="Main"]').count() == 1, "the audit page was put inside another page"
    assert await page.locator("#users-table").count() == 0
    assert await page.locator("h1").all_inner_texts() == ["Audit log"]
    await expect(page).to_have_title(re.compile(r"^Audit log"))
    assert await page.watch.still_marked(), "a full page load happened"


async def test_times_are_local_with_the_exact_utc_time_in_the_title(live_server, browser, admin, db):
    when = datetime(2024, 3, 5, 12, 34, 56)
    await insert_events(db, [event_row(when, actor=admin, action="update", target_id=admin["id"],
                                       changes={"email": ["a@x.test", "b@x.test"]})])
    context = await browser.new_context(timezone_id="Asia/Kolkata", locale="en-GB")  # UTC+05:30
    page = await context.new_page()
    try:
        await log_in(page, live_server, ADMIN, "/audit")
        stamp = page.locator("#audit-rows tr[data-row]", has_text="Updated").locator("time")
        await expect(stamp).to_have_text("5 Mar 2024, 18:04")
        assert await stamp.get_attribute("title") == "2024-03-05 12:34:56 UTC"
        assert await stamp.get_attribute("datetime") == "2024-03-05T12:34:56Z"

        # Rows that htmx brings in are shown in local time too.
        await page.keyboard.press("/")
        await page.keyboard.type(ADMIN)
        await expect(page).to_have_url(re.compile(r"actor=root\.admin"))
        await page.keyboard.press("Tab")
        await page.keyboard.press("ArrowDown")
        await page.keyboard.press("ArrowDown")  # Created, then Updated
        await expect(page).to_have_url(re.compile(r"action=update"))
        await expect(rows(page)).to_have_count(1)
        await expect(stamp).to_have_text("5 Mar 2024, 18:04")
        assert await stamp.get_attribute("title") == "2024-03-05 12:34:56 UTC"
    finally:
        await context.close()


async def test_the_audit_log_has_no_serious_accessibility_violations(live_server, browser, admin, history):
    context = await browser.new_context(bypass_csp=True)
    page = await context.new_page()
    try:
        await log_in(page, live_server, ADMIN, "/audit")
        assert await axe_violations(page) == []
        # A user's history, several actions at once (the dashboard's "Changes" link) and a later page.
        await page.goto(f"{live_server}/audit?target_type=user&target_id={history['id']}"
                        "&action=create&action=update&action=delete&action=restore")
        await expect(page.locator("#audit-table")).to_contain_text("History of other.person")
        assert await axe_violations(page) == []
        await page.keyboard.press("?")
        await expect(page.locator("#help-dialog")).to_be_visible()
        assert await axe_violations(page) == []
    finally:
        await context.close()


async def test_the_target_field_suggests_users_on_the_audit_page_reached_from_the_users_table(live_server, page, admin,
                                                                                              history):
    """user_picker.js is in no page's <head>: app.js adds it when a page brought by hx-boost
    (whose scripts htmx does not run) holds a field that names it."""
    await log_in(page, live_server, ADMIN, "/users")
    await page.watch.mark()
    await page.get_by_role("link", name="Audit log").click()
    await expect(page).to_have_url(f"{live_server}/audit")
    await page.get_by_label("Target user").press_sequentially("other")
    await expect(page.locator('#audit-target-names option[value="other.person"]')).to_have_count(1)
    assert await page.locator("script[src$='/user_picker.js']").count() == 1
    assert await page.watch.still_marked(), "a full page load happened"
    assert page.watch.console_errors == []
