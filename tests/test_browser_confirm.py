"""Address journeys in Chromium, against the real server and the real SMTP server: a new
account confirms its address by the mailed link (the banner goes), and a change of address is
confirmed at the new address while the old one is told; checked by axe on every new page."""
import secrets

from playwright.async_api import expect

from conftest import PASSWORD
from helpers import axe_violations_of, log_in, mailed_url

# Chromium logs the answers these journeys expect: 410 for a link that no longer works.
EXPECTED_ERRORS = ("Failed to load resource: the server responded with a status of 410",)


def unexpected(errors: list[str]) -> list[str]:
    return [e for e in errors if not e.startswith(EXPECTED_ERRORS)]


async def test_a_new_account_confirms_its_address_by_the_mailed_link_and_the_banner_goes(mail_server, page, browser):
    base = mail_server.url
    username = f"newcomer.{secrets.token_hex(3)}"
    address = f"{username}@example.com"
    await page.goto(base + "/register")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Email").fill(address)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_label("Repeat the password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await page.wait_for_url(base + "/dashboard")
    banner = page.locator("#confirm-banner")
    await expect(banner).to_contain_text(f"Confirm your email address: we sent a link to {address}.")
    assert await axe_violations_of(browser, page) == []
    first = mailed_url(await mail_server.mailbox.next_to(address), "confirm-email")

    await page.watch.mark()
    await page.get_by_role("button", name="Send it again").click()
    await expect(banner).to_contain_text(f"We sent a new link to {address}.")
    assert await page.watch.still_marked(), "the banner's button reloaded the page"
    url = mailed_url(await mail_server.mailbox.next_to(address, 2), "confirm-email")
    assert url.startswith(base + "/confirm-email/") and url != first

    await page.goto(first)  # replaced by the newer link: the one page, with a way to a new link
    await expect(page.get_by_role("heading", name="This link is invalid or has expired")).to_be_visible()
    await expect(page.get_by_role("button", name="Send the link again")).to_be_visible()
    assert await axe_violations_of(browser, page) == []

    await page.goto(url)
    await expect(page.get_by_role("heading", name="Confirm your email address")).to_be_visible()
    assert await axe_violations_of(browser, page) == []
    await page.get_by_role("button", name=f"Confirm {address}").click()
    await page.wait_for_url(base + "/dashboard")
    await expect(page.locator("#toasts")).to_contain_text("Your email address is confirmed.")
    await expect(page.locator("#confirm-banner")).to_have_count(0)
    await page.goto(base + "/profile")
    await expect(page.locator("#profile-account")).not_to_contain_text("not confirmed")
    assert unexpected(page.watch.console_errors) == []


async def test_the_resend_pages_answer_in_place_and_pass_axe(mail_server, page, browser):
    base = mail_server.url
    await page.goto(base + "/confirm-email/sent")
    await expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    assert await axe_violations_of(browser, page) == []
    await page.goto(base + "/confirm-email/resend")
    assert await axe_violations_of(browser, page) == []
    await page.watch.mark()
    await page.get_by_label("Your email address").fill("not an address")
    await page.get_by_role("button", name="Send the link again").click()
    await expect(page.locator("#confirm-resend-email-error")).to_contain_text("@-sign")
    await page.get_by_label("Your email address").fill(f"nobody.{secrets.token_hex(3)}@example.com")
    await page.get_by_role("button", name="Send the link again").click()
    await expect(page.locator("#confirm-resend-sent")).to_have_text(
        "If an account with that address needs confirming, we sent a new link to it.")
    assert await page.watch.still_marked(), "the form reloaded the page"
    errors = [e for e in page.watch.console_errors if "status of 422" not in e]
    assert errors == []


async def test_a_change_of_address_is_confirmed_at_the_new_one_and_the_old_one_is_told(mail_server, page, browser, make_user):
    base = mail_server.url
    username = f"mover.{secrets.token_hex(3)}"
    old, new = f"{username}@example.com", f"{username}.new@example.com"
    await make_user(username=username, email=old)
    await log_in(page, base, username, "/profile")
    await page.watch.mark()
    await page.get_by_label("New email address").fill(new)
    await page.get_by_label("Current password").first.fill(PASSWORD)
    await page.get_by_role("button", name="Change email address").click()
    await expect(page.locator("#profile-email-sent")).to_have_text(
        f"We sent a confirmation link to {new}. Your address changes when you open it.")
    await expect(page.locator("#profile-email-pending")).to_contain_text(f"Waiting for confirmation of {new}")
    await expect(page.locator("#profile-account")).to_contain_text(old)
    assert await page.watch.still_marked(), "the form reloaded the page"
    assert await axe_violations_of(browser, page) == []

    url = mailed_url(await mail_server.mailbox.next_to(new), "confirm-email-change")
    assert url.startswith(base + "/confirm-email-change/")
    await page.goto(url)
    await expect(page.get_by_role("heading", name="Confirm your new email address")).to_be_visible()
    assert await axe_violations_of(browser, page) == []
    await page.get_by_role("button", name=f"Confirm {new}").click()
    await page.wait_for_url(base + "/profile")
    await expect(page.locator("#toasts")).to_contain_text(f"Your email address is now {new}.")
    await expect(page.locator("#profile-account")).to_contain_text(new)
    await expect(page.locator("#profile-email-pending")).to_have_count(0)

    told = {m["Subject"]: m for m in [await mail_server.mailbox.next_to(old, n) for n in (1, 2)]}
    assert set(told) == {"A change of your email address was asked for · Gatehouse",
                         "Your email address was changed · Gatehouse"}
    changed = told["Your email address was changed · Gatehouse"]
    assert new in changed.get_body(("plain",)).get_content()
    await page.goto(mailed_url(changed, "report-email-change"))  # only looked at: a GET does nothing
    await expect(page.get_by_role("heading", name="Report a change you did not make")).to_be_visible()
    assert await axe_violations_of(browser, page) == []
    await page.goto(base + "/profile")
    await expect(page.locator("#profile-account")).to_contain_text(new)
    assert unexpected(page.watch.console_errors) == []
