"""Importing users in Chromium: a file of about 200 rows with mistakes in it, uploaded,
previewed with every problem next to its row, one row fixed in place, the rest skipped, the
import's progress, and its result; all without a page load after the upload, and axe-clean."""
import pytest
from playwright.async_api import expect
from sqlalchemy import select

from helpers import axe_violations, layout_problems, log_in, rows
from web.core.tables import users

ADMIN = "root.admin"
GOOD = 195


@pytest.fixture
async def admin(make_user):
    return await make_user("Admin", username=ADMIN)


def sheet() -> str:
    """195 good rows and 6 with problems (line numbers in the file: header is line 1)."""
    lines = ["Username;E-mail;Role;Active"]
    lines += [f"person{n:03};person{n:03}@example.org;{'Manager' if n % 50 == 0 else ''};{'no' if n % 7 == 0 else 'yes'}"
              for n in range(GOOD)]
    lines += ["person001;dup@example.org;;",         # line 197: name used on line 3
              "wizard.one;wizard@example.org;Wizard;",  # line 198: unknown role
              "bad.mail;not an address;;",             # line 199
              "=SUM(A1);formula@example.org;;",         # line 200: not a username
              "ok.later;okl@example.org;;maybe",        # line 201: active unreadable
              "fix.me;fix me@example.org;;"]            # line 202: fixed in place below
    return "\n".join(lines) + "\n"


async def test_import_a_file_with_mistakes_preview_fix_skip_progress_and_result(live_server, page, admin, db, tmp_path):
    csv_file = tmp_path / "team.csv"
    csv_file.write_text(sheet(), encoding="utf-8-sig")
    await log_in(page, live_server, ADMIN, "/users")
    await page.locator("a", has_text="Import from CSV").click()
    await expect(page.locator("h1")).to_have_text("Import users")

    await page.locator("#import-file").set_input_files(str(csv_file))
    await page.locator("#import-upload button[type=submit]").click()
    await expect(page.locator("h1")).to_have_text("Import of team.csv")
    await expect(page.locator("#preview-title")).to_have_text("201 rows: 195 ready, 6 with problems")
    await expect(page.locator("#import-preview tbody tr")).to_have_count(100)  # a page of the preview
    await page.watch.mark()

    # Only the rows with problems, each with its message; then fix one in place: it becomes
    # ready, and focus comes back to it.
    await page.locator("a", has_text="Only rows with problems").click()
    await expect(page.locator("#import-preview tbody tr")).to_have_count(6)
    await expect(page.locator("#import-row-197")).to_contain_text("Also on line 3 of the file.")
    await expect(page.locator("#import-row-198")).to_contain_text("Unknown role")
    await page.locator("#import-row-202 a", has_text="Fix").click()
    email = page.locator("#fix-202-email")
    await expect(page.locator("#fix-202-username")).to_be_focused()
    await email.fill("fix.me@example.org")
    await email.press("Enter")
    await expect(page.locator("#preview-title")).to_have_text("201 rows: 196 ready, 5 with problems")
    await expect(page.locator("#import-row-202 a", has_text="Fix")).to_be_focused()

    # Starting with problems left needs a choice: the message sits next to the button.
    await page.locator("#import-start button[type=submit]").click()
    await expect(page.locator("#import-start-error")).to_contain_text("5 rows have problems")
    await page.locator("#import-start input[name=skip_bad]").check()
    await page.locator("#import-start button[type=submit]").click()

    # Progress, then the result, in place.
    await expect(page.locator("#status-title")).to_have_text("Import finished", timeout=30_000)
    await expect(page.locator("#import-status [role=status]")).to_have_text(
        "196 created, 5 skipped, 0 failed, of 201 rows.")
    await page.locator("#import-status a", has_text="Skipped").click()
    await expect(page.locator("#import-status tbody tr")).to_have_count(5)
    assert await page.watch.still_marked(), "no page load after the upload"

    names = {row.username for row in await rows(db, select(users.c.username))}
    assert {f"person{n:03}" for n in range(GOOD)} | {"fix.me"} <= names
    assert not names & {"wizard.one", "bad.mail", "ok.later"}


@pytest.fixture
async def axe_page(browser):
    """A page whose CSP lets the test inject axe-core."""
    context = await browser.new_context(bypass_csp=True)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    yield page
    await context.close()


async def test_the_import_pages_have_no_serious_accessibility_violations(live_server, axe_page, admin, tmp_path):
    page = axe_page
    csv_file = tmp_path / "team.csv"
    csv_file.write_text(sheet(), encoding="utf-8")
    await log_in(page, live_server, ADMIN, "/users/import")
    assert await axe_violations(page) == []
    await page.locator("#import-upload button[type=submit]").click()  # no file: the error by the field
    await expect(page.locator("#import-file-error")).to_have_text("Choose a CSV file to import.")
    assert await axe_violations(page) == []
    await page.locator("#import-file").set_input_files(str(csv_file))
    await page.locator("#import-upload button[type=submit]").click()
    await expect(page.locator("#preview-title")).to_contain_text("201 rows")
    assert await axe_violations(page) == []
    await page.locator("a", has_text="Only rows with problems").click()
    await page.locator("#import-row-202 a", has_text="Fix").click()
    await expect(page.locator("#fix-202-username")).to_be_focused()
    assert await axe_violations(page) == []
    await page.locator("#import-start input[name=skip_bad]").check()
    await page.locator("#import-start button[type=submit]").click()
    await expect(page.locator("#status-title")).to_have_text("Import finished", timeout=30_000)
    assert await axe_violations(page) == []


async def test_the_import_page_at_phone_width_does_not_scroll_sideways(live_server, page, admin, tmp_path):
    csv_file = tmp_path / "team.csv"
    csv_file.write_text(sheet(), encoding="utf-8")
    await page.set_viewport_size({"width": 390, "height": 844})
    await log_in(page, live_server, ADMIN, "/users/import")
    await page.locator("#import-file").set_input_files(str(csv_file))
    await page.locator("#import-upload button[type=submit]").click()
    await expect(page.locator("#preview-title")).to_contain_text("201 rows")
    assert await layout_problems(page) == []
    await page.locator("#import-preview a", has_text="Fix").first.click()
    await expect(page.locator(".row-fix input[autofocus]")).to_be_focused()
    assert await layout_problems(page) == []
