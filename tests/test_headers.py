"""Headers every answer carries: powerful browser features denied (passkeys allowed for this
site), and no page, fragment or error page of the app kept by any cache. Static stylesheets
and page scripts, which are no documents, go without the headers only documents read."""
import pytest

from helpers import htmx, post, send, signed_in

pytestmark = pytest.mark.sqlite_only  # set on every answer, whatever the database

DOCUMENT_ONLY = ("Content-Security-Policy", "Permissions-Policy", "X-Frame-Options", "Cross-Origin-Opener-Policy")
EVERYWHERE = ("X-Content-Type-Options", "Referrer-Policy")
DENIED = ("camera", "microphone", "geolocation", "payment", "usb", "serial", "hid", "midi",
          "display-capture", "accelerometer", "gyroscope", "magnetometer")


def policy(response) -> dict[str, str]:
    """Permissions-Policy as {feature: allowlist}."""
    header = response.headers.get("Permissions-Policy", "")
    return dict(item.strip().split("=", 1) for item in header.split(",") if "=" in item)


async def answers_of_every_kind(app, make_user) -> dict[str, object]:
    """A signed-in Admin's answers: pages, fragments, redirects, empty answers, error pages
    whole and as htmx toasts, and a streamed download."""
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    return {
        "page": await client.get("/dashboard"),
        "fragment": await client.get("/users", headers=htmx("users-table")),
        "row fragment": await client.get(f"/users/{them['id']}/row", headers=htmx(f"user-{them['id']}")),
        "redirect": await client.get("/login"),
        "htmx empty answer": await send(client, "/users/bulk", [("action", "deactivate"), ("ids", str(them["id"]))],
                                        target="bulk-form"),
        "htmx refusal": await send(client, "/users/bulk", [("action", "activate")], target="bulk-form"),
        "not found page": await client.get("/no/such/page"),
        "not found fragment": await client.get("/users/999999/edit", headers=htmx("user-999999")),
        "method not allowed": await client.get("/logout"),
        "forged form": await post(client, "/users/bulk", {"action": "activate"}, csrf=False),
        "too large": await post(client, "/profile/email", {"email": "x" * 70_000}),
        "download": await client.get("/audit.csv"),
    }


async def test_every_answer_denies_powerful_features_and_allows_passkeys_here(app, client, make_user):
    answers = {"visitor's page": await client.get("/login"), "static SVG": await client.get("/static/favicon.svg"),
               **await answers_of_every_kind(app, make_user)}
    for kind, response in answers.items():
        features = policy(response)
        assert all(features.get(name) == "()" for name in DENIED), (kind, features)
        assert features.get("publickey-credentials-get") == "(self)", (kind, features)
        assert features.get("publickey-credentials-create") == "(self)", (kind, features)


async def test_no_answer_to_a_signed_in_person_is_stored_by_caches(app, make_user):
    answers = await answers_of_every_kind(app, make_user)
    expected = {"page": 200, "fragment": 200, "row fragment": 200, "redirect": 303, "htmx empty answer": 204,
                "htmx refusal": 400, "not found page": 404, "not found fragment": 404,
                "method not allowed": 405, "forged form": 403, "too large": 413, "download": 200}
    assert {kind: r.status_code for kind, r in answers.items()} == expected
    stored = {kind: r.headers.get("Cache-Control") for kind, r in answers.items()
              if r.headers.get("Cache-Control") != "no-store"}
    assert stored == {}


@pytest.mark.parametrize("path", ["/login", "/register", "/healthz"])
async def test_a_visitors_pages_are_not_stored_either(client, path):
    """They carry a CSRF token tied to the visitor's cookie."""
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers.get("Cache-Control") == "no-store"


async def test_static_files_stay_cacheable_by_max_age_alone(client):
    """Without Expires, which max-age overrides (RFC 9111, 5.3)."""
    response = await client.get("/static/app.css")
    assert response.headers.get("Cache-Control") == "public, max-age=3600"
    assert "Expires" not in response.headers


async def test_static_documents_keep_every_header_and_scripts_and_stylesheets_only_the_general_ones(client):
    """An SVG opened directly is a document, and the live worker takes its CSP from its own
    response; a stylesheet or a page's script ignores CSP, Permissions-Policy, X-Frame-Options
    and COOP, but not nosniff, nor Referrer-Policy (a stylesheet's own fetches use it)."""
    page = (await client.get("/login")).headers
    for path in ("/static/favicon.svg", "/static/live-worker.js"):
        headers = (await client.get(path)).headers
        assert {n: headers.get(n) for n in DOCUMENT_ONLY + EVERYWHERE} == {n: page[n] for n in DOCUMENT_ONLY + EVERYWHERE}, path
    for path in ("/static/app.css", "/static/app.js", "/static/htmx-2.0.11.min.js"):
        headers = (await client.get(path)).headers
        assert [n for n in DOCUMENT_ONLY if n in headers] == [], path
        assert {n: headers.get(n) for n in EVERYWHERE} == {n: page[n] for n in EVERYWHERE}, path
