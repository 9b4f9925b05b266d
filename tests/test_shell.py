"""The app shell: the page around every screen, its headers, errors, CSRF and access rules."""
from html.parser import HTMLParser

import pytest

from conftest import csrf_from, free_port, make_config
from helpers import text
from web import create_app
from web.core.access import ANONYMOUS, public
from web.core.tables import ROLES

EXTERNAL = ("http://", "https://", "//")


class Tags(HTMLParser):
    """Every start tag of a page, as (name, attributes)."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def find(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


@pytest.fixture
async def offline_app(tmp_path):
    """The app on a SQLite file nobody creates: for what must not need the database."""
    app = create_app(make_config(f"sqlite+aiosqlite:///{tmp_path / 'never-created.sqlite3'}"))
    yield app
    await app.db.dispose()


async def csrf_token(client) -> str:
    return csrf_from(await text(await client.get("/")))


def add_probe_route(app):
    """A public POST route that reads its form, registered before the first request."""
    from quart import request

    @app.post("/probe")
    @public
    async def probe():
        form = await request.form
        return f"ok {len(form.get('data', ''))}"


# ---- the page -----------------------------------------------------------------------------

async def test_home_page_has_a_polite_live_toast_region(client):
    response = await client.get("/")
    assert response.status_code == 200
    toasts = Tags(await text(response)).find("div", id="toasts")
    assert len(toasts) == 1
    assert toasts[0].get("role") == "status"
    assert toasts[0].get("aria-live") == "polite"


async def test_home_page_loads_the_vendored_htmx(client):
    tags = Tags(await text(await client.get("/")))
    sources = [a.get("src") for a in tags.find("script")]
    assert "/static/htmx-2.0.11.min.js" in sources


async def test_home_page_loads_no_external_scripts_or_stylesheets(client):
    tags = Tags(await text(await client.get("/")))
    urls = [a.get("src", "") for a in tags.find("script")]
    urls += [a.get("href", "") for a in tags.find("link") if "stylesheet" in a.get("rel", "")]
    assert urls, "the page loads no scripts or stylesheets at all"
    for url in urls:
        assert url.startswith("/") and not url.startswith(EXTERNAL), f"external resource: {url}"
    assert "/static/app.css" in urls


async def test_home_page_has_no_inline_script_or_style(client):
    # The CSP allows only 'self' scripts and styles: anything inline would be blocked.
    tags = Tags(await text(await client.get("/")))
    assert all(a.get("src") for a in tags.find("script")), "inline <script>"
    assert not tags.find("style"), "inline <style>"
    assert not [t for t, a in tags.tags if "style" in a], "style attribute"
    assert not [t for t, a in tags.tags if any(k.startswith("on") for k in a)], "inline event handler"


# ---- headers ------------------------------------------------------------------------------

async def test_pages_send_a_strict_content_security_policy(client):
    csp = (await client.get("/")).headers.get("Content-Security-Policy", "")
    for directive in ("object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'"):
        assert directive in csp
    assert "'unsafe-inline'" not in csp
    assert "'unsafe-eval'" not in csp


async def test_pages_send_nosniff_referrer_policy_and_vary_hx_request(client):
    headers = (await client.get("/")).headers
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert headers.get("Referrer-Policy")
    vary = [v.strip() for value in headers.getlist("Vary") for v in value.split(",")]
    assert "HX-Request" in vary


# ---- errors -------------------------------------------------------------------------------

async def shown(client, path: str, status: int = 200, headers: dict | None = None):
    """GET `path`: the response, its body and whether it is the whole page (the document and
    its navigation); a fragment has neither."""
    response = await client.get(path, headers=headers or {})
    assert response.status_code == status
    body = await text(response)
    whole = "<html" in body
    assert ("<nav" in body) == whole, body[:300]
    return response, body, whole


async def test_unknown_page_is_a_styled_404_page(client):
    _, body, whole = await shown(client, "/no-such-page", 404)
    assert whole
    assert "Page not found" in body
    assert 'id="toasts"' in body


async def test_unknown_page_for_boosted_htmx_is_a_fragment_retargeted_to_main(client):
    response, body, whole = await shown(client, "/no-such-page", 404, {"HX-Request": "true", "HX-Boosted": "true"})
    assert not whole
    assert "Page not found" in body
    assert response.headers.get("HX-Retarget") == "#main"


async def test_unknown_page_for_htmx_is_never_a_whole_page(client):
    response, body, whole = await shown(client, "/no-such-page", 404, {"HX-Request": "true", "HX-Target": "users-rows"})
    assert not whole
    # The reason reaches the person: in the fragment, or as a toast event in HX-Trigger.
    assert "There is nothing at this address" in body + response.headers.get("HX-Trigger", "")


# ---- fragments ----------------------------------------------------------------------------

async def test_htmx_request_targeting_main_gets_only_the_main_block(client):
    _, body, whole = await shown(client, "/", headers={"HX-Request": "true", "HX-Target": "main"})
    assert not whole
    assert 'class="hero"' in body
    assert "<h1>Gatehouse</h1>" in body


@pytest.mark.parametrize("extra", [{"HX-Boosted": "true"}, {"HX-History-Restore-Request": "true"}])
async def test_boosted_and_history_restore_requests_get_the_full_page(client, extra):
    _, body, whole = await shown(client, "/", headers={"HX-Request": "true", "HX-Target": "main", **extra})
    assert whole
    assert "<h1>Gatehouse</h1>" in body


# ---- health -------------------------------------------------------------------------------

async def test_healthz_answers_ok_when_the_database_answers(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert await response.get_json() == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize("url", [
    "sqlite+aiosqlite:////nonexistent-dir/x.sqlite3",
    "postgresql+asyncpg://postgres@127.0.0.1:{port}/gatehouse",
], ids=["sqlite-missing-dir", "postgres-closed-port"])
async def test_healthz_answers_503_when_the_database_is_unreachable(url):
    app = create_app(make_config(url.format(port=free_port())))
    try:
        response = await app.test_client().get("/healthz")
        assert response.status_code == 503
        body = await response.get_json()
        assert body["status"] == "error"
        assert body["database"] == "unreachable"
    finally:
        await app.db.dispose()


# ---- CSRF ---------------------------------------------------------------------------------

async def test_post_without_csrf_token_is_refused(client):
    response = await client.post("/")
    assert response.status_code == 403


async def test_post_with_the_page_csrf_token_is_accepted(app, client):
    add_probe_route(app)
    token = await csrf_token(client)
    response = await client.post("/probe", form={"data": "abc"}, headers={"X-CSRF-Token": token})
    assert response.status_code == 200
    assert await text(response) == "ok 3"


async def test_csrf_token_in_a_form_field_is_accepted(app, client):
    add_probe_route(app)
    token = await csrf_token(client)
    response = await client.post("/probe", form={"csrf_token": token, "data": "abcd"})
    assert response.status_code == 200


async def test_post_with_a_wrong_csrf_token_is_refused(app, client):
    add_probe_route(app)
    await csrf_token(client)
    response = await client.post("/probe", form={"data": "x"}, headers={"X-CSRF-Token": "forged"})
    assert response.status_code == 403


async def test_post_without_the_session_cookie_is_refused(app, client):
    add_probe_route(app)
    token = await csrf_token(client)
    stranger = app.test_client()  # another browser: same token, no session cookie
    response = await stranger.post("/probe", headers={"X-CSRF-Token": token})
    assert response.status_code == 403


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_post_from_another_site_is_refused_even_with_a_valid_token(app, client, site):
    add_probe_route(app)
    token = await csrf_token(client)
    response = await client.post("/probe", headers={"X-CSRF-Token": token, "Sec-Fetch-Site": site})
    assert response.status_code == 403
    assert "another site" in await text(response)


async def test_post_with_a_foreign_origin_is_refused_even_with_a_valid_token(app, client):
    add_probe_route(app)
    token = await csrf_token(client)
    response = await client.post("/probe", headers={"X-CSRF-Token": token, "Origin": "http://evil.example"})
    assert response.status_code == 403


async def test_post_to_root_from_another_site_is_refused(client):
    token = await csrf_token(client)
    response = await client.post("/", headers={"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403


# ---- access -------------------------------------------------------------------------------

async def test_route_without_an_access_declaration_is_refused(offline_app):
    @offline_app.get("/undeclared")
    async def undeclared():
        return "x"

    @offline_app.get("/declared")
    @public
    async def declared():
        return "x"

    client = offline_app.test_client()
    assert (await client.get("/declared")).status_code == 200
    response = await client.get("/undeclared")
    assert response.status_code == 403
    assert "Not allowed" in await text(response)


async def test_every_route_declares_who_may_use_it(offline_app):
    endpoints = {rule.endpoint for rule in offline_app.url_map.iter_rules() if rule.endpoint != "static"}
    assert {"pages.home", "health.healthz"} <= endpoints
    for endpoint in sorted(endpoints):
        allowed = getattr(offline_app.view_functions[endpoint], "allowed_roles", None)
        assert allowed, f"{endpoint} has no access declaration (use web.core.access.allow)"
        assert allowed <= {ANONYMOUS, *ROLES}, f"{endpoint}: unknown roles {allowed}"


# ---- request size -------------------------------------------------------------------------

async def test_post_body_over_64_kb_is_refused_with_413(app, client):
    add_probe_route(app)
    token = await csrf_token(client)
    response = await client.post("/probe", form={"data": "x" * (65 * 1024)}, headers={"X-CSRF-Token": token})
    assert response.status_code == 413
    assert "64 KB" in await text(response)


async def test_post_body_just_under_64_kb_is_accepted(app, client):
    add_probe_route(app)
    token = await csrf_token(client)
    response = await client.post("/probe", form={"data": "x" * (60 * 1024)}, headers={"X-CSRF-Token": token})
    assert response.status_code == 200


async def test_oversized_form_is_refused_with_413_before_the_csrf_check(client):
    # The token travels in the form, so the CSRF check itself must read the body.
    token = await csrf_token(client)
    response = await client.post("/", form={"csrf_token": token, "data": "x" * (65 * 1024)})
    assert response.status_code == 413
    assert "64 KB" in await text(response)


# ---- static files -------------------------------------------------------------------------

@pytest.mark.parametrize("path, content_type", [
    ("/static/app.css", "text/css"),
    ("/static/app.js", "javascript"),
    ("/static/htmx-2.0.11.min.js", "javascript"),
])
async def test_static_files_are_served_with_caching_headers(client, path, content_type):
    response = await client.get(path)
    assert response.status_code == 200
    assert content_type in response.headers.get("Content-Type", "")
    cache_control = response.headers.get("Cache-Control", "")
    assert "max-age=" in cache_control or response.headers.get("ETag")
    assert response.headers.get("X-Content-Type-Options") == "nosniff"


async def test_static_file_revalidation_answers_304(client):
    first = await client.get("/static/app.css")
    etag = first.headers.get("ETag")
    assert etag
    again = await client.get("/static/app.css", headers={"If-None-Match": etag})
    assert again.status_code == 304
