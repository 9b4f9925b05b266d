"""Second factors in Chromium: an authenticator app set up from the profile (the secret read
from the page, the codes computed by the test), then logging in with the password and a code,
and with the password and a recovery code; an Admin made to set one up at login."""
import time

import pyotp
import pytest
from playwright.async_api import expect

from conftest import PASSWORD, QUIET, hypercorn
from helpers import axe_violations_of, log_in


async def password_step(page, base: str, username: str, next_path: str) -> None:
    await page.goto(f"{base}/login?next={next_path}")
    await page.fill("#login-identifier", username)
    await page.fill("#login-password", PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url(base + "/login/second-step")
    await expect(page.locator("#second-step-code")).to_be_focused()


async def log_out(page, base: str) -> None:
    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url(base + "/")


async def test_an_app_set_up_in_the_profile_then_logging_in_with_a_code_and_a_recovery_code(
        live_server, browser, page, make_user):
    base = live_server
    await make_user(username="alice")
    await log_in(page, base, "alice", "/profile")
    await page.watch.mark()
    await page.get_by_role("button", name="Set up an authenticator app").click()
    await expect(page.locator("#profile-factors svg[role=img]")).to_be_visible()
    secret = (await page.locator("#totp-secret").inner_text()).replace(" ", "")
    code = page.get_by_label("Code from the app")
    await expect(code).to_be_focused()
    await code.fill(pyotp.TOTP(secret).now())
    await page.keyboard.press("Enter")
    codes_list = page.locator("#recovery-codes-list")
    await expect(codes_list).to_be_visible()
    recovery = (await codes_list.inner_text()).split()
    assert len(recovery) == 10
    await expect(page.locator("#recovery-codes-title")).to_be_focused()
    await expect(page.get_by_role("link", name="Download")).to_have_attribute("download", "gatehouse-recovery-codes.txt")
    await expect(page.get_by_role("button", name="Copy")).to_be_visible()
    await expect(page.locator("#factors-state")).to_contain_text("Recovery codes left: 10 of 10")
    assert await page.watch.still_marked(), "setting up the app reloaded the page"

    # The enrolment's code used up its step: the next step's code logs in.
    await log_out(page, base)
    await password_step(page, base, "alice", "/profile")
    assert await axe_violations_of(browser, page) == []
    await page.fill("#second-step-code", "000000" if pyotp.TOTP(secret).at(0) != "000000" else "111111")
    await page.keyboard.press("Enter")
    await expect(page.locator("#second-step-code-error")).to_contain_text("not right")
    await expect(page.locator("#second-step-code")).to_be_focused()
    await page.fill("#second-step-code", pyotp.TOTP(secret).at(time.time() + 30))
    await page.keyboard.press("Enter")
    await page.wait_for_url(base + "/profile")
    await expect(page.locator("#toasts")).to_contain_text("Welcome back, alice.")

    await log_out(page, base)
    await password_step(page, base, "alice", "/dashboard")
    await page.fill("#second-step-code", recovery[0])
    await page.keyboard.press("Enter")
    await page.wait_for_url(base + "/dashboard")
    await expect(page.locator("#toasts")).to_contain_text("Recovery code used: 9 left")
    # The wrong code's 401, which the browser logs, is the only error.
    assert [e for e in page.watch.console_errors if "status of 401" not in e] == []


@pytest.fixture
def admins_must_enrol(database_url, db, tmp_path):
    """A server where Admins must have a second factor (REQUIRE_2FA_ROLES=Admin)."""
    with hypercorn(database_url, tmp_path, REQUIRE_2FA_ROLES="Admin", **QUIET) as url:
        yield url


async def test_an_admin_without_a_second_factor_sets_one_up_before_anything_else(
        admins_must_enrol, browser, page, make_user):
    base = admins_must_enrol
    await make_user("Admin", username="ada")
    await page.goto(f"{base}/login?next=/users")
    await page.fill("#login-identifier", "ada")
    await page.fill("#login-password", PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url(base + "/login/enrol")
    await expect(page.locator("#enrol-title")).to_have_text("Set up a second factor")
    assert await axe_violations_of(browser, page) == []
    secret = (await page.locator("#totp-secret").inner_text()).replace(" ", "")

    # Until it is set up there is no session: the page asked for leads back to the login.
    other = await page.context.new_page()
    await other.goto(f"{base}/users")
    assert other.url.startswith(base + "/login"), other.url
    await other.close()

    await page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    await page.keyboard.press("Enter")
    await expect(page.locator("#recovery-codes-list")).to_be_visible()
    await expect(page.locator("#toasts")).to_contain_text("Your authenticator app is set up.")
    assert len((await page.locator("#recovery-codes-list").inner_text()).split()) == 10
    await page.get_by_role("link", name="Continue").click()
    await page.wait_for_url(base + "/users")
    await expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
