"""Live updates in Chromium (static/live.js): two Admins in two browsers see each other's
changes without a reload, and one browser's many tabs share one event stream."""
import re

import pytest
from playwright.async_api import expect

from helpers import log_in


@pytest.fixture
async def admins(make_user):
    return await make_user("Admin", username="ada"), await make_user("Admin", username="bea")


async def edit_username(page, user_id: int, new_name: str):
    row = page.locator(f"#user-{user_id}")
    await row.locator("[data-action=edit]").click()
    await row.locator("input[name=username]").fill(new_name)
    await row.locator("input[name=username]").press("Enter")
    await expect(page.locator(f"#user-{user_id}")).not_to_have_attribute("data-editing", "")


async def test_two_admins_see_changes_presence_and_new_users_live(live_server, browser, page, admins, make_user):
    alice = await make_user("Customer", username="alice")
    bob = await make_user("Customer", username="bob")
    b_context = await browser.new_context()
    b = await b_context.new_page()
    try:
        await log_in(page, live_server, "ada")
        await log_in(b, live_server, "bea")
        await page.watch.mark()

        # B renames alice: A's row changes in place, highlighted, without a reload.
        await edit_username(b, alice["id"], "alice.renamed")
        a_alice = page.locator(f"#user-{alice['id']}")
        await expect(a_alice.locator(".col-username")).to_contain_text("alice.renamed")
        await expect(a_alice).to_have_class(re.compile(r"\blive-changed\b"))

        # A opens bob's editor: B sees who is editing it, and it clears when A leaves.
        await page.locator(f"#user-{bob['id']} [data-action=edit]").click()
        await expect(page.locator(f"#user-{bob['id']} input[name=username]")).to_be_visible()
        await expect(b.locator(f"#user-{bob['id']} .presence")).to_have_text("ada is editing")

        # B changes bob meanwhile: A's editor is not replaced, it says who changed it.
        await page.locator(f"#user-{bob['id']} input[name=email]").fill("mine@example.com")
        await edit_username(b, bob["id"], "bob.theirs")
        a_bob = page.locator(f"#user-{bob['id']}")
        await expect(a_bob.locator(".live-note")).to_contain_text(re.compile(r"Changed by bea at \d"))
        await expect(a_bob.locator("input[name=email]")).to_have_value("mine@example.com")
        await a_bob.get_by_role("button", name="Review").click()
        await expect(a_bob.locator(".field-username .theirs")).to_have_text("Theirs: bob.theirs")
        await a_bob.get_by_role("link", name="Cancel").click()
        await expect(b.locator(f"#user-{bob['id']} .presence")).to_be_empty()

        # B creates a user: A's table stays put and offers it.
        await b.keyboard.press("n")
        await b.locator("#new-username").fill("carol.new")
        await b.locator("#new-email").fill("carol@example.com")
        await b.locator("#new-email").press("Enter")
        await expect(b.locator("#toasts")).to_contain_text("carol.new")
        show = page.locator("[data-live-show]")
        await expect(show).to_have_text("1 new — show")
        await expect(page.locator("tbody tr[data-row]", has_text="carol.new")).to_have_count(0)
        await show.click()
        await expect(page.locator("tbody tr[data-row]", has_text="carol.new")).to_have_count(1)

        # The audit log's first page takes new events at the top.
        await page.locator("nav a[href='/audit']").click()
        await expect(page.locator("#audit-rows")).to_be_visible()
        await edit_username(b, alice["id"], "alice.again")
        await expect(page.locator("#audit-rows tr[data-row]").first).to_contain_text("alice.again")
        assert await page.watch.still_marked(), "a full page load happened"
        assert page.watch.console_errors == []
    finally:
        await b_context.close()


async def test_eight_tabs_share_one_stream_and_the_eighth_still_saves(live_server, browser, admins, make_user):
    dora = await make_user("Customer", username="dora")
    context = await browser.new_context()
    try:
        first = await context.new_page()
        await log_in(first, live_server, "ada")
        tabs = [first]
        for _ in range(7):
            tab = await context.new_page()
            await tab.goto(live_server + "/users")
            tabs.append(tab)
        await edit_username(tabs[-1], dora["id"], "dora.saved")
        await expect(tabs[-1].locator("#toasts")).to_contain_text("dora.saved")
        # Every tab hears of it through the one stream, the first among them.
        await expect(first.locator(f"#user-{dora['id']} .col-username")).to_contain_text("dora.saved")
    finally:
        await context.close()
