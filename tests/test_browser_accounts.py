"""The accounts journey in Chromium: by keyboard, without full page loads, and without JavaScript."""
import asyncio
import re
from datetime import datetime, timedelta

from playwright.async_api import expect

NEW_PASSWORD = "a brand new passphrase for testing"
REGISTER_PASSWORD = "tea kettles sing at dawn 🫖"


async def type_into_focused(page, text: str) -> None:
    await page.keyboard.type(text)
    await page.keyboard.press("Tab")


async def register_by_keyboard(page, base: str, username: str) -> None:
    await page.goto(base + "/register")
    await expect(page.locator("#register-username")).to_be_focused()
    await type_into_focused(page, username)
    await type_into_focused(page, f"{username}@example.com")
    await type_into_focused(page, REGISTER_PASSWORD)
    await page.keyboard.type(REGISTER_PASSWORD)
    await page.keyboard.press("Enter")


async def test_register_login_change_password_logout_by_keyboard_without_reload(live_server, page):
    await register_by_keyboard(page, live_server, "keyboard.kim")
    await page.wait_for_url(live_server + "/dashboard")
    await expect(page.locator("#toasts")).to_contain_text("Account created")
    await expect(page.locator("h1")).to_have_text("Hello, keyboard.kim")
    await page.watch.mark()

    # Log out from the nav, by keyboard: focus the button and press Enter.
    await page.get_by_role("button", name="Log out").focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url(live_server + "/")
    await expect(page.locator("#toasts")).to_contain_text("You have logged out")

    await page.get_by_role("link", name="Log in").first.focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r".*/login$"))
    await expect(page.locator("#login-identifier")).to_be_focused()
    await type_into_focused(page, "KEYBOARD.KIM@example.com")
    await page.keyboard.type(REGISTER_PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url(live_server + "/dashboard")
    await expect(page.locator("#toasts")).to_contain_text("Welcome back, keyboard.kim")

    await page.get_by_role("link", name="Profile").focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url(live_server + "/profile")
    await page.get_by_label("Current password").nth(1).focus()
    await type_into_focused(page, REGISTER_PASSWORD)
    await type_into_focused(page, NEW_PASSWORD)
    await page.keyboard.type(NEW_PASSWORD)
    # Two argon2 hashes: seconds on a busy machine. Wait for the answer as for every other one.
    async with page.expect_response(live_server + "/profile/password"):
        await page.keyboard.press("Enter")
    await expect(page.locator("#toasts")).to_contain_text("Password changed")

    await page.get_by_role("button", name="Log out").focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url(live_server + "/")
    assert await page.watch.still_marked(), "a full page load happened after the first page"
    assert page.watch.console_errors == []


def held_until(release: asyncio.Event):
    """A route handler that sends each request once `release` is set."""
    async def hold(route):
        await release.wait()
        await route.continue_()
    return hold


def answered_after(release: asyncio.Event):
    """A route handler that sends each request at once, with the cookies it was issued with,
    and hands the page its answer once `release` is set: a slow answer."""
    async def late(route):
        answer = await route.fetch()
        await release.wait()
        await route.fulfill(response=answer)
    return late


async def test_a_field_check_due_after_registering_is_not_sent_so_logging_out_works(live_server, page):
    """The last field's check waits 400 ms after the last key; on a busy machine it could come
    due after the registration's answer. A login ends the page's CSRF token, so that check was
    refused, and the refusal, answered after the dashboard, erased the dashboard's token from
    the cookie: "Log out" was then refused too. Here a fake clock brings the check due between
    the answer and the dashboard, and the dashboard is answered first."""
    start = datetime(2026, 1, 1, 8)
    await page.clock.install(time=start)
    await page.goto(live_server + "/register")
    await expect(page.locator("#register-username")).to_be_focused()  # keys typed before it are lost
    for text in ("late.check", "late.check@example.com", REGISTER_PASSWORD):
        await type_into_focused(page, text)
    await page.clock.pause_at(start + timedelta(hours=1))  # from here on, timers fire when told
    await page.keyboard.type(REGISTER_PASSWORD)
    timers_ran, dashboard_shown = asyncio.Event(), asyncio.Event()
    await page.route("**/dashboard", held_until(timers_ran))
    await page.route("**/register/check", answered_after(dashboard_shown))
    late_checks = []
    page.on("request", lambda request: request.url.endswith("/register/check") and late_checks.append(request))
    async with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/register")):
        await page.keyboard.press("Enter")

    await page.clock.run_for(1000)  # the check comes due; the form is still on the page
    timers_ran.set()
    await page.clock.resume()
    await page.wait_for_url(live_server + "/dashboard")
    dashboard_shown.set()
    for check in late_checks:
        await (await check.response()).finished()
    await expect(page.locator("h1")).to_have_text("Hello, late.check")

    await page.get_by_role("button", name="Log out").focus()
    async with page.expect_response(live_server + "/logout") as logout:
        await page.keyboard.press("Enter")
    assert (await logout.value).status == 200
    await page.wait_for_url(live_server + "/")
    assert late_checks == []


async def test_inline_validation_shows_message_next_to_field_as_you_type(live_server, page):
    await page.goto(live_server + "/register")
    await page.watch.mark()
    await page.keyboard.type("ab")
    await expect(page.locator("#register-username-error")).to_have_text("Use 3 to 32 characters.")
    await expect(page.locator("#register-username-error")).to_have_attribute("role", "alert")
    await page.keyboard.type("c")
    await expect(page.locator("#register-username-error")).to_have_text("")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    await page.keyboard.type("1qaz2wsx3edc4rfv")
    await expect(page.locator("#register-password-error")).to_contain_text("most common")
    await expect(page.locator("#register-password")).to_be_focused()
    assert await page.watch.still_marked()


async def test_failed_submit_keeps_values_and_focuses_first_error(live_server, page):
    await page.goto(live_server + "/register")
    await page.fill("#register-username", "valid.name")
    await page.fill("#register-email", "not-an-email")
    await page.fill("#register-password", REGISTER_PASSWORD)
    await page.fill("#register-password-confirm", "something else entirely here")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.locator("#register-email-error")).not_to_be_empty()
    await expect(page.locator("#register-password-confirm-error")).to_have_text("The two passwords differ.")
    await expect(page.locator("#register-username")).to_have_value("valid.name")
    await expect(page.locator("#register-email")).to_be_focused()


async def test_journey_works_with_javascript_disabled(live_server, browser):
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    try:
        await page.goto(live_server + "/register")
        await page.fill("#register-username", "nojs.nina")
        await page.fill("#register-email", "nina@example.com")
        await page.fill("#register-password", "short")
        await page.fill("#register-password-confirm", "short")
        await page.get_by_role("button", name="Create account").click()
        await expect(page.locator("#register-password-error")).to_contain_text("at least 15")
        await page.fill("#register-password", REGISTER_PASSWORD)
        await page.fill("#register-password-confirm", REGISTER_PASSWORD)
        await page.get_by_role("button", name="Create account").click()
        await page.wait_for_url(live_server + "/dashboard")
        await expect(page.locator("#toasts")).to_contain_text("Account created")
        await page.get_by_role("button", name="Log out").click()
        await page.wait_for_url(live_server + "/")
        await page.goto(live_server + "/login?next=/profile")
        await page.fill("#login-identifier", "nojs.nina")
        await page.fill("#login-password", "wrong password entirely")
        await page.get_by_role("button", name="Log in").click()
        await expect(page.locator("#login-form-error")).to_have_text("Wrong username, email or password.")
        await page.fill("#login-password", REGISTER_PASSWORD)
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_url(live_server + "/profile")
        await page.fill("#password-current", REGISTER_PASSWORD)
        await page.fill("#password-new", NEW_PASSWORD)
        await page.fill("#password-confirm", NEW_PASSWORD)
        await page.get_by_role("button", name="Change password").click()
        await expect(page.locator("#toasts")).to_contain_text("Password changed")
    finally:
        await context.close()


async def test_password_change_ends_the_session_in_another_browser(live_server, browser, page):
    await register_by_keyboard(page, live_server, "two.browsers")
    await page.wait_for_url(live_server + "/dashboard")
    other = await browser.new_context()
    other_page = await other.new_page()
    try:
        await other_page.goto(live_server + "/login")
        await other_page.fill("#login-identifier", "two.browsers")
        await other_page.fill("#login-password", REGISTER_PASSWORD)
        await other_page.get_by_role("button", name="Log in").click()
        await other_page.wait_for_url(live_server + "/dashboard")

        await page.goto(live_server + "/profile")
        await expect(page.locator("#profile-sessions tbody tr")).to_have_count(2)
        await page.fill("#password-current", REGISTER_PASSWORD)
        await page.fill("#password-new", NEW_PASSWORD)
        await page.fill("#password-confirm", NEW_PASSWORD)
        await page.get_by_role("button", name="Change password").click()
        await expect(page.locator("#toasts")).to_contain_text("1 other session ended")
        await expect(page.locator("#profile-sessions tbody tr")).to_have_count(1)

        await other_page.get_by_role("link", name="Profile").click()
        await other_page.wait_for_url(re.compile(r".*/login\?next=%2Fprofile$"))
    finally:
        await other.close()


async def test_markup_typed_by_a_user_is_shown_as_text(live_server, page):
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    await page.goto(live_server + "/login")
    payload = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    await page.fill("#login-identifier", payload)
    await page.fill("#login-password", "whatever it is, wrong")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#login-form-error")).to_have_text("Wrong username, email or password.")
    await expect(page.locator("#login-identifier")).to_have_value(payload)
    assert await page.locator("#main img").count() == 0
    assert dialogs == []


async def test_content_security_policy_holds_and_nothing_violates_it(live_server, page):
    violations = []
    page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
    response = await page.goto(live_server + "/register")
    csp = response.headers["content-security-policy"]
    assert "object-src 'none'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    await page.keyboard.type("csp.check")
    await expect(page.locator("#register-username-error")).to_have_text("")
    await page.goto(live_server + "/login")
    await page.goto(live_server + "/")
    assert violations == []
    assert page.watch.console_errors == []
