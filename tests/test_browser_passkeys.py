"""Passkeys in Chromium with its virtual authenticator (DevTools protocol): one added from the
profile, then "Sign in with a passkey" on the login page, with no password typed, then as the
second step of a login with the password."""
from playwright.async_api import expect

from conftest import PASSWORD
from helpers import axe_violations_of, log_in

AUTHENTICATOR = {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                 "hasUserVerification": True, "isUserVerified": True}


async def test_a_passkey_added_in_the_profile_signs_in_alone_and_as_the_second_step(live_server, browser, page,
                                                                                     make_user):
    base = live_server
    await make_user(username="alice")
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable")
    await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})

    await log_in(page, base, "alice", "/profile")
    await page.watch.mark()
    await page.get_by_label("Name of the new passkey").fill("Virtual key")
    await page.get_by_role("button", name="Add a passkey").click()
    await expect(page.locator("#toasts")).to_contain_text("Passkey “Virtual key” added.")
    renamed = page.locator("#profile-passkeys input[name=name]").first
    await expect(renamed).to_have_value("Virtual key")
    await expect(renamed).to_be_focused()
    assert await page.watch.still_marked(), "adding a passkey reloaded the page"
    assert await axe_violations_of(browser, page) == []

    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url(base + "/")
    await page.goto(base + "/login")
    await page.get_by_role("button", name="Sign in with a passkey").click()
    await page.wait_for_url(base + "/dashboard")
    await expect(page.locator("#toasts")).to_contain_text("Welcome back, alice.")

    # With the password, the passkey is the second step (reached without a reload: htmx).
    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url(base + "/")
    await page.goto(base + "/login")
    await page.get_by_label("Username or email").fill("alice")
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(base + "/login/second-step")
    await page.get_by_role("button", name="Use a passkey").click()
    await page.wait_for_url(base + "/dashboard")
    assert page.watch.console_errors == []
