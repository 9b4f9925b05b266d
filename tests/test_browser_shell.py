"""The app shell in a real browser: htmx loads under the CSP, the stylesheet applies,
nothing is blocked or broken, and boosted navigation swaps without a page load."""
import asyncio

import pytest
from playwright.async_api import expect

pytestmark = pytest.mark.browser

# Registered before any page script runs; Playwright injects it outside the page's CSP.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture
async def watched(page):
    await page.add_init_script(RECORD_CSP_VIOLATIONS)
    return page


def errors_besides_the_404(page) -> list[str]:
    """Console errors, less the one Chromium logs for a document answered with 404."""
    expected = "Failed to load resource: the server responded with a status of 404"
    return [e for e in page.watch.console_errors if not e.startswith(expected)]


async def csp_violations(page) -> list[str]:
    return await page.evaluate("window.__cspViolations")


async def test_home_page_loads_htmx_2(live_server, watched):
    response = await watched.goto(live_server + "/")
    assert response.status == 200
    assert (await watched.evaluate("window.htmx && window.htmx.version")).startswith("2.0")


async def test_home_page_has_the_toast_status_region(live_server, watched):
    await watched.goto(live_server + "/")
    toasts = watched.locator("#toasts")
    assert await toasts.get_attribute("role") == "status"
    assert await toasts.get_attribute("aria-live") == "polite"


async def test_home_page_stylesheet_is_applied(live_server, watched):
    await watched.goto(live_server + "/")
    font = await watched.evaluate("getComputedStyle(document.body).fontFamily")
    assert "system-ui" in font, f"body font is {font!r}: app.css did not apply"
    weight = await watched.evaluate("getComputedStyle(document.querySelector('.brand')).fontWeight")
    assert int(weight) >= 700


async def test_home_page_has_no_console_errors_or_csp_violations(live_server, watched):
    await watched.goto(live_server + "/")
    await watched.wait_for_load_state("networkidle")
    assert watched.watch.console_errors == []
    assert await csp_violations(watched) == []


async def test_csp_violations_would_be_noticed(live_server, watched):
    # Guards the test above: an inline script is blocked, and both watchers see it.
    await watched.goto(live_server + "/")
    await watched.evaluate("""() => {
        const s = document.createElement("script");
        s.textContent = "window.__inlineRan = true";
        document.body.appendChild(s);
    }""")
    await watched.wait_for_function("window.__cspViolations.length > 0")
    assert await watched.evaluate("window.__inlineRan") is None
    assert any("script-src" in v for v in await csp_violations(watched))
    for _ in range(50):  # the console message may arrive after the violation event
        if any("Content Security Policy" in e for e in watched.watch.console_errors):
            break
        await asyncio.sleep(0.1)
    assert any("Content Security Policy" in e for e in watched.watch.console_errors), watched.watch.console_errors


async def test_unknown_page_shows_page_not_found(live_server, watched):
    response = await watched.goto(live_server + "/no-such-page")
    assert response.status == 404
    await expect(watched.locator("h1")).to_have_text("Page not found")
    await expect(watched.locator("nav")).to_have_count(1)
    await watched.wait_for_load_state("networkidle")
    assert errors_besides_the_404(watched) == []
    assert await csp_violations(watched) == []


async def test_boosted_link_swaps_the_page_without_a_reload(live_server, watched):
    await watched.goto(live_server + "/no-such-page")
    await watched.wait_for_function("window.htmx !== undefined")
    await watched.watch.mark()
    await watched.get_by_role("link", name="Go to the start page").click()
    await watched.wait_for_url(live_server + "/")
    await expect(watched.locator(".hero h1")).to_have_text("Gatehouse")
    assert await watched.watch.still_marked(), "the link caused a full page load: hx-boost is not working"
    assert errors_besides_the_404(watched) == []
    assert await csp_violations(watched) == []
