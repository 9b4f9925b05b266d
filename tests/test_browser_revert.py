"""Reverting from the audit log in Chromium: an inline edit set back in place, by keyboard,
without a page load, including the conflict view when the field changed again since."""
import pytest
from playwright.async_api import expect

from helpers import audit_rows, focused_row, log_in, user_row

ADMIN = "root.admin"


@pytest.fixture
async def admin(make_user):
    return await make_user("Admin", username=ADMIN)


@pytest.fixture
async def kim(make_user):
    return await make_user("Customer", username="kim.customer", email="first@example.org")


async def edit_email(page, user_id: int, email: str):
    """Edit the user's email inline in the users table, as a person would."""
    await page.locator(f"#user-{user_id} [data-action=edit]").click()
    field = page.locator(f"#edit-{user_id}-email")
    await expect(page.locator(f"#edit-{user_id}-username")).to_be_focused()
    await field.fill(email)
    await field.press("Enter")
    await expect(page.locator(f"#user-{user_id}:not([data-editing])")).to_contain_text(email)


async def open_log(page):
    await page.locator('nav[aria-label="Main"] a', has_text="Audit log").click()
    await expect(page.locator("h1")).to_have_text("Audit log")


async def test_revert_an_inline_edit_from_the_log_in_place(live_server, page, admin, kim, db):
    await log_in(page, live_server, ADMIN, "/users")
    await page.watch.mark()
    await edit_email(page, kim["id"], "second@example.org")
    event = (await audit_rows(db, "update"))[-1]
    await open_log(page)
    row = page.locator(f"#event-{event.id}")
    await expect(row.locator("[data-action=revert]")).to_have_count(1)

    # Open the panel by keyboard, and Escape closes it with focus back on the event.
    await page.keyboard.press("j")
    await expect(focused_row(page)).to_have_id(f"event-{event.id}")
    await page.keyboard.press("r")
    box = page.locator(f"#revert-{event.id}-email")
    await expect(box).to_be_focused()
    await expect(box).to_be_checked()
    await expect(row).to_contain_text("Now second@example.org, as this event left it")
    await page.keyboard.press("Escape")
    await expect(page.locator(f"#revert-{event.id}")).to_have_count(0)
    await expect(focused_row(page)).to_have_id(f"event-{event.id}")

    await page.keyboard.press("r")
    await expect(box).to_be_focused()
    await page.locator(f"#revert-{event.id} button[type=submit]").click()
    await expect(page.locator("#toasts")).to_contain_text(f"Event #{event.id} reverted on kim.customer")
    newest = page.locator("#audit-rows tr[data-row]").first
    await expect(newest).to_contain_text(f"reverts #{event.id}")
    await expect(focused_row(page)).to_have_id(f"event-{event.id}")
    assert (await user_row(db, kim["id"])).email == "first@example.org"
    assert await page.watch.still_marked(), "a full page load happened"
    assert page.watch.console_errors == []

    # The new event's link leads to the event it reverted.
    await newest.locator(f'a[href="/audit/{event.id}"]').click()
    await expect(page.locator("#audit-summary")).to_contain_text(f"Event #{event.id}")
    await expect(page.locator("#audit-rows tr[data-row]")).to_have_count(1)
    assert await page.watch.still_marked(), "a full page load happened"


async def test_a_field_changed_since_shows_the_conflict_then_restore_anyway(live_server, page, admin, kim, db):
    await log_in(page, live_server, ADMIN, "/users")
    await page.watch.mark()
    await edit_email(page, kim["id"], "second@example.org")
    await edit_email(page, kim["id"], "third@example.org")
    first_edit = (await audit_rows(db, "update"))[0]
    await open_log(page)

    row = page.locator(f"#event-{first_edit.id}")
    await row.locator("[data-action=revert]").click()
    panel = page.locator(f"#revert-{first_edit.id}")
    await panel.locator("button[type=submit]").click()
    await expect(panel).to_contain_text("Changed since: now third@example.org; this event made it second@example.org")
    await expect(panel.locator("[role=alert]").first).to_contain_text("Changed since this event: email")
    await expect(page.locator(f"#revert-{first_edit.id}-email")).to_be_focused()
    assert (await user_row(db, kim["id"])).email == "third@example.org"  # nothing written yet

    await panel.get_by_role("button", name="Restore anyway").click()
    await expect(page.locator("#audit-rows tr[data-row]").first).to_contain_text(f"reverts #{first_edit.id}")
    await expect(focused_row(page)).to_have_id(f"event-{first_edit.id}")
    assert (await user_row(db, kim["id"])).email == "first@example.org"
    assert await page.watch.still_marked(), "a full page load happened"
    # Chromium reports the conflict's 409 answer as a failed resource; nothing else may show.
    assert [e for e in page.watch.console_errors if "status of 409" not in e] == []
