"""The forgot-password journey in Chromium, against the real server and the real SMTP server:
the login page's link, the request, the message read from the SMTP server, its link, a new
password, and a login with it; with htmx, without JavaScript, and checked by axe."""
import secrets

from playwright.async_api import expect

from helpers import axe_violations, mailed_url

NEW_PASSWORD = "lantern quarry velvet orbit"
SENT = "If an account exists for that name or address, we sent a link to its email address."


async def account(make_user, label: str) -> tuple[str, str]:
    """A username and an address no other test sends to."""
    username = f"{label}.{secrets.token_hex(3)}"
    await make_user(username=username, email=f"{username}@example.com")
    return username, f"{username}@example.com"


async def reset_link(mail_server, address: str) -> str:
    return mailed_url(await mail_server.mailbox.next_to(address), "reset-password")


async def ask_for_a_link(page, base: str, address: str) -> None:
    """From the login page: Forgot password?, the address, Send."""
    await page.goto(base + "/login")
    await page.get_by_role("link", name="Forgot password?").click()
    await page.wait_for_url(base + "/forgot-password")
    await page.get_by_label("Username or email", exact=True).fill(address)
    await page.get_by_role("button", name="Send me a link").click()
    await expect(page.locator("#forgot-sent")).to_contain_text(SENT)


async def reset_and_log_in(page, base: str, username: str) -> None:
    """On the link's page: the new password twice, then a login with it on the page it sends to."""
    await page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    await page.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Set the new password").click()
    await page.wait_for_url(base + "/login")
    await expect(page.locator("#toasts")).to_contain_text("Password changed. Log in with your new password.")
    await page.get_by_label("Username or email", exact=True).fill(username)
    await page.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(base + "/dashboard")


async def test_forgot_password_from_the_login_page_to_a_login_with_the_new_password(mail_server, page, make_user):
    base = mail_server.url
    username, address = await account(make_user, "journey")
    await ask_for_a_link(page, base, address)
    url = await reset_link(mail_server, address)
    assert url.startswith(base + "/reset-password/")

    await page.goto(url)
    await expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    await expect(page.get_by_label("New password", exact=True)).to_be_focused()
    await page.watch.mark()
    await page.get_by_label("New password", exact=True).fill("too short")
    await page.get_by_label("Repeat the new password").fill("too short")
    await page.get_by_role("button", name="Set the new password").click()
    await expect(page.locator("#reset-password-new-error")).to_contain_text("Use at least 15 characters")
    await expect(page.get_by_label("New password", exact=True)).to_be_focused()
    assert await page.watch.still_marked(), "the refused form reloaded the page"

    await reset_and_log_in(page, base, username)
    await expect(page.locator("#toasts")).to_contain_text(f"Welcome back, {username}")

    await page.goto(url)  # used: the one page for a link that no longer works
    await expect(page.get_by_role("heading", name="This link is invalid or has expired")).to_be_visible()
    await page.get_by_role("link", name="Request a new link").click()
    await page.wait_for_url(base + "/forgot-password")
    # Chromium logs the answers this journey expects, 422 (the refused form) and 410 (the used link).
    expected = tuple(f"Failed to load resource: the server responded with a status of {code}" for code in (410, 422))
    assert [e for e in page.watch.console_errors if not e.startswith(expected)] == []


async def test_forgot_password_works_without_javascript(mail_server, browser, make_user):
    base = mail_server.url
    username, address = await account(make_user, "nojs")
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    try:
        await ask_for_a_link(page, base, address)
        await page.goto(await reset_link(mail_server, address))
        await reset_and_log_in(page, base, username)
    finally:
        await context.close()


async def test_the_reset_pages_have_no_serious_accessibility_violations(mail_server, browser, make_user):
    base = mail_server.url
    _, address = await account(make_user, "axe")
    context = await browser.new_context(bypass_csp=True)  # axe is injected as a script
    page = await context.new_page()
    page.set_default_timeout(10_000)
    try:
        await page.goto(base + "/forgot-password")
        assert await axe_violations(page) == []
        await page.get_by_role("button", name="Send me a link").click()  # nothing typed
        await expect(page.locator("#forgot-identifier-error")).to_contain_text("Type your username or email")
        assert await axe_violations(page) == []
        await page.get_by_label("Username or email", exact=True).fill(address)
        await page.get_by_role("button", name="Send me a link").click()
        await expect(page.locator("#forgot-sent")).to_contain_text(SENT)
        assert await axe_violations(page) == []
        await page.goto(await reset_link(mail_server, address))
        assert await axe_violations(page) == []
        await page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        await page.get_by_label("Repeat the new password").fill(NEW_PASSWORD + " but different")
        await page.get_by_role("button", name="Set the new password").click()
        await expect(page.locator("#reset-password-confirm-error")).to_contain_text("The two passwords differ.")
        assert await axe_violations(page) == []
        await page.goto(base + "/reset-password/not-a-token")
        await expect(page.get_by_role("heading", name="This link is invalid or has expired")).to_be_visible()
        assert await axe_violations(page) == []
    finally:
        await context.close()
