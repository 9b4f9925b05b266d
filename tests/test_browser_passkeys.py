"""Passkeys in Chromium with its virtual authenticator (DevTools protocol): one added from the
profile (reached from the users table without a page load), then "Sign in with a passkey" on
the login page, with no password typed, then as the second step of a login with the password."""
from playwright.async_api import expect

from conftest import PASSWORD
from helpers import axe_violations_of, log_in

AUTHENTICATOR = {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                 "hasUserVerification": True, "isUserVerified": True}


async def test_a_passkey_added_in_the_profile_signs_in_alone_and_as_the_second_step(live_server, browser, page,
                                                                                     make_user):
    base = live_server
    await make_user("Manager", username="alice")
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable")
    await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})

    # The profile reached by hx-boost from a users table loaded afresh (the login page had
    # passkeys.js added already), and htmx runs no script a page brings: app.js adds it for the
    # form that names it.
    await log_in(page, base, "alice", "/users")
    await page.reload()
    await page.watch.mark()
    assert await page.locator("script[src$='/passkeys.js']").count() == 0
    await page.get_by_role("link", name="Profile").click()
    await page.wait_for_url(base + "/profile")
    await page.get_by_label("Name of the new passkey").fill("Virtual key")
    await page.get_by_role("button", name="Add a passkey").click()
    await expect(page.locator("#toasts")).to_contain_text("Passkey “Virtual key” added.")
    renamed = page.locator("#profile-passkeys input[name=name]").first
    await expect(renamed).to_have_value("Virtual key")
    await expect(renamed).to_be_focused()
    assert await page.watch.still_marked(), "reaching the profile or adding a passkey reloaded the page"
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
