"""Re-authentication in Chromium: an inline role change interrupted by "Confirm it's you",
resumed in place by the password."""
from datetime import timedelta

from playwright.async_api import expect
from sqlalchemy import update

from conftest import PASSWORD
from helpers import focused_row, log_in, user_named
from web.core.db import utcnow
from web.core.tables import sessions


async def test_an_inline_role_change_waits_for_the_password_then_saves_in_place(live_server, page, make_user, db):
    admin = await make_user("Admin", username="root.admin")
    await make_user("Customer", username="carla.customer")
    await log_in(page, live_server, admin["username"], "/users?q=carla")
    async with db.write() as conn:  # the login's proof is 11 minutes old (the server's clock is its own)
        await conn.execute(update(sessions).values(reauthenticated_at=utcnow() - timedelta(minutes=11)))
    await page.watch.mark()

    await page.keyboard.press("j")
    await page.keyboard.press("Enter")
    await expect(page.locator("tr.editing input[name=username]")).to_be_focused()
    await page.locator("tr.editing select[name=role]").select_option("Manager")
    await page.locator("tr.editing input[name=username]").focus()
    await page.keyboard.press("Enter")

    dialog = page.get_by_role("dialog", name="Confirm it's you")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_label("Password")).to_be_focused()
    await page.keyboard.type("not the password at all")
    await page.keyboard.press("Enter")
    await expect(dialog.locator("#reauth-proof-error")).to_have_text("That is not your password.")
    await expect(dialog.get_by_label("Password")).to_be_focused()
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")

    await expect(dialog).to_have_count(0)
    await expect(page.locator("#toasts")).to_contain_text("carla.customer")
    await expect(focused_row(page)).to_contain_text("Manager")
    assert (await user_named(db, "carla.customer")).role == "Manager"
    assert await page.watch.still_marked(), "a full page load happened"
    # The browser logs each 401 (asked, then the wrong password); nothing else went wrong.
    assert [e for e in page.watch.console_errors if "status of 401" not in e] == []
