"""The invitation journey in Chromium, against the real SMTP server: an Admin creates a user
in the table, the invitee follows the mailed link in a browser of their own, chooses a
password and lands signed in; the Admin's table then shows them as Active."""
import re

from playwright.async_api import expect

from helpers import axe_violations, focused_row, log_in, mailbox_address, mailed_url

NEW_PASSWORD = "lantern quarry velvet orbit"


async def axe_findings(browser, url: str, username: str | None = None) -> list:
    """axe-core's serious findings on `url`, in a browser of its own that lets the test inject
    axe past the CSP (the journey's browsers keep it), signed in as `username` if given."""
    context = await browser.new_context(bypass_csp=True)
    try:
        page = await context.new_page()
        if username:
            base = url.split("/", 3)
            await log_in(page, "/".join(base[:3]), username, "/" + base[3])
        else:
            await page.goto(url)
        return await axe_violations(page)
    finally:
        await context.close()


async def test_an_admin_invites_and_the_invitee_signs_in_from_the_mail(mail_server, page, browser, make_user):
    base = mail_server.url
    admin = await make_user("Admin", username="root.admin")
    address = mailbox_address("ivy")
    await log_in(page, base, admin["username"])

    await page.keyboard.press("n")
    await expect(page.locator("#new-username")).to_be_focused()
    await page.keyboard.type("ivy.invited")
    await page.keyboard.press("Tab")
    await page.keyboard.type(address)
    await page.keyboard.press("Enter")
    await expect(page.locator("#toasts")).to_contain_text(f"Invited ivy.invited: we sent a link to {address}.")
    row = focused_row(page)
    await expect(row).to_contain_text("ivy.invited")
    await expect(row.locator(".badge-invited")).to_have_text("Invited")
    await expect(row.locator("[data-action=resend-invitation]")).to_have_text("Resend invitation of ivy.invited")
    assert await axe_findings(browser, base + "/users?active=invited", admin["username"]) == []

    message = await mail_server.mailbox.next_to(address)
    url = mailed_url(message, "invitation")
    assert url.startswith(base + "/invitation/")

    context = await browser.new_context()  # the invitee's own browser: no cookie of the Admin's
    try:
        invitee = await context.new_page()
        invitee.set_default_timeout(10_000)
        errors = []
        invitee.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
        await invitee.goto(url)
        await expect(invitee.locator("h1")).to_have_text("Welcome ivy.invited")
        await expect(invitee.locator("main")).to_contain_text("You were invited as Customer")
        await expect(invitee.locator("#invitation-password")).to_be_focused()
        assert await axe_findings(browser, url) == []  # opening the link again uses nothing

        await invitee.keyboard.type("too short")  # refused next to the field, in place
        await invitee.keyboard.press("Tab")
        await invitee.keyboard.type("too short")
        await invitee.keyboard.press("Enter")
        await expect(invitee.locator("#invitation-password-error")).to_contain_text("at least 15 characters")
        await expect(invitee.locator("#invitation-password")).to_have_attribute("aria-invalid", "true")

        await invitee.fill("#invitation-password", NEW_PASSWORD)
        await invitee.fill("#invitation-password-confirm", NEW_PASSWORD)
        await invitee.locator("#invitation-password-confirm").press("Enter")
        await invitee.wait_for_url(base + "/dashboard")
        await expect(invitee.locator("#toasts")).to_contain_text("Welcome to Gatehouse, ivy.invited")
        await expect(invitee.locator(".who")).to_contain_text("Signed in as ivy.invited")
        assert [e for e in errors if "status of 422" not in e] == []  # the refused password's answer
    finally:
        await context.close()

    await page.reload()
    row = page.locator("tr[data-row]", has_text="ivy.invited")
    await expect(row.locator("td").nth(4)).to_have_text(re.compile(r"^\s*Yes\s*$"))
    await expect(row.locator(".badge-invited")).to_have_count(0)
    assert page.watch.console_errors == []
