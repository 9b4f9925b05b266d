"""Who may use which route, and CSRF protection.

EXPECTED declares the outcome of every route for every role. A route the app has and the table
does not is a failure: a new route needs a declared rule here.
"""
import re

import pytest
from werkzeug.routing import IntegerConverter

from conftest import csrf_from
from helpers import (
    audit_rows, is_login_redirect, location, open_session, post, session_rows, signed_in, text, token,
)

# Who may use a route is decided from the route's declaration and the signed-in role before any
# query runs: the database does not change it (the row-level checks have their own tests).
pytestmark = pytest.mark.sqlite_only

ANONYMOUS = "anonymous"
ROLES = (ANONYMOUS, "Customer", "Manager", "Admin")
SIGNED_IN = ROLES[1:]

LOGIN = "login"            # a redirect to /login (or 401 + HX-Redirect for htmx)
DASHBOARD = "dashboard"    # a redirect to /dashboard: nothing to do here once signed in
ALLOWED = "allowed"        # POST: got past access control (not 403, not the login page)


def everyone(outcome):
    return dict.fromkeys(ROLES, outcome)


def anyone_signed_in(outcome):
    return {ANONYMOUS: LOGIN, **dict.fromkeys(SIGNED_IN, outcome)}


def anonymous_only_page():
    return {ANONYMOUS: 200, **dict.fromkeys(SIGNED_IN, DASHBOARD)}


def staff(outcome):
    return {ANONYMOUS: LOGIN, "Customer": 403, "Manager": outcome, "Admin": outcome}


def admins(outcome):
    return {**staff(403), "Admin": outcome}


EXPECTED = {
    ("GET", "/"): anonymous_only_page(),
    ("GET", "/healthz"): everyone(200),
    ("GET", "/register"): anonymous_only_page(),
    ("POST", "/register"): everyone(ALLOWED),
    ("POST", "/register/check"): everyone(ALLOWED),
    ("GET", "/login"): anonymous_only_page(),
    ("POST", "/login"): everyone(ALLOWED),
    ("POST", "/logout"): anyone_signed_in(ALLOWED),
    # Password reset: anyone may ask; a link that does not work answers 410 (tests/test_password_reset.py).
    ("GET", "/forgot-password"): everyone(200),
    ("POST", "/forgot-password"): everyone(ALLOWED),
    ("GET", "/reset-password/<token>"): everyone(410),
    ("POST", "/reset-password/<token>"): everyone(ALLOWED),
    # An invitation's page: anyone holding the link; one that opens nothing answers 410
    # (tests/test_invitations.py).
    ("GET", "/invitation/<token>"): everyone(410),
    ("POST", "/invitation/<token>"): everyone(ALLOWED),
    # Confirming an address, a new address, reporting a change: anyone holding the link; one
    # that does not work answers 410 (tests/test_email_confirmation.py, test_email_change.py).
    ("GET", "/confirm-email/<token>"): everyone(410),
    ("POST", "/confirm-email/<token>"): everyone(ALLOWED),
    ("GET", "/confirm-email/sent"): everyone(200),
    ("GET", "/confirm-email/resend"): everyone(200),
    ("POST", "/confirm-email/resend"): everyone(ALLOWED),
    ("POST", "/confirm-email/send"): anyone_signed_in(ALLOWED),
    ("GET", "/confirm-email-change/<token>"): everyone(410),
    ("POST", "/confirm-email-change/<token>"): everyone(ALLOWED),
    ("GET", "/report-email-change/<token>"): everyone(410),
    ("POST", "/report-email-change/<token>"): everyone(ALLOWED),
    ("GET", "/dashboard"): anyone_signed_in(200),
    ("GET", "/profile"): anyone_signed_in(200),
    ("POST", "/profile/email"): anyone_signed_in(ALLOWED),
    ("POST", "/profile/email/cancel"): anyone_signed_in(ALLOWED),
    ("POST", "/profile/password"): anyone_signed_in(ALLOWED),
    ("POST", "/profile/sessions/<sid>/end"): anyone_signed_in(ALLOWED),
    ("POST", "/profile/sessions/end-others"): anyone_signed_in(ALLOWED),
    # Passkeys (tests/test_passkeys.py): one's own, from the profile; signing in with one, by
    # anyone; the second step's, without a login under way, send back to the login page.
    ("POST", "/profile/passkeys/options"): anyone_signed_in(ALLOWED),
    ("POST", "/profile/passkeys"): anyone_signed_in(ALLOWED),
    ("POST", "/profile/passkeys/<int:passkey_id>/rename"): anyone_signed_in(ALLOWED),
    ("POST", "/profile/passkeys/<int:passkey_id>/remove"): anyone_signed_in(ALLOWED),
    ("POST", "/login/passkey/options"): everyone(ALLOWED),
    ("POST", "/login/passkey"): everyone(ALLOWED),
    ("POST", "/login/second-step/passkey/options"): everyone(410),
    ("POST", "/login/second-step/passkey"): everyone(LOGIN),
    ("POST", "/profile/preferences"): anyone_signed_in(ALLOWED),
    # Second factors (tests/test_second_factors.py): one's own, from the profile; the login's
    # second step and forced enrolment, without a login under way, send back to the login page;
    # an Admin resets another user's.
    ("POST", "/profile/factors/totp"): anyone_signed_in(ALLOWED),
    ("POST", "/profile/factors/totp/confirm"): anyone_signed_in(ALLOWED),
    ("POST", "/profile/factors/totp/cancel"): anyone_signed_in(ALLOWED),
    ("POST", "/profile/factors/recovery-codes"): anyone_signed_in(ALLOWED),
    ("POST", "/profile/factors/remove"): anyone_signed_in(ALLOWED),
    ("GET", "/login/second-step"): everyone(LOGIN),
    ("POST", "/login/second-step"): everyone(LOGIN),
    ("GET", "/login/enrol"): everyone(LOGIN),
    ("POST", "/login/enrol"): everyone(LOGIN),
    ("POST", "/users/<int:user_id>/factors/reset"): admins(ALLOWED),
    # The proof before a guarded link (an export); a form without one is a 400 (test_reauthentication.py).
    ("POST", "/reauthenticate"): anyone_signed_in(ALLOWED),
    ("POST", "/reauthenticate/passkey/options"): anyone_signed_in(ALLOWED),
    # The users table. Its routes that name a user are asked about a Customer, whom both
    # Managers and Admins may handle; which targets a Manager may touch is tested elsewhere.
    ("GET", "/users"): staff(200),
    ("GET", "/users/new"): staff(200),
    ("POST", "/users"): staff(ALLOWED),
    ("GET", "/users/<int:user_id>"): staff(200),  # the user's page (tests/test_user_detail.py)
    ("GET", "/users/<int:user_id>/row"): staff("redirect to /users"),  # a row, or the table
    # Live updates: the stream needs the server's broker, which a test client does not start (503).
    ("GET", "/events"): anyone_signed_in(503),
    ("POST", "/users/<int:user_id>/presence"): staff(ALLOWED),
    ("GET", "/users/<int:user_id>/edit"): staff(200),
    ("POST", "/users/<int:user_id>"): staff(ALLOWED),
    ("GET", "/users/<int:user_id>/delete"): staff(200),
    ("POST", "/users/<int:user_id>/delete"): staff(ALLOWED),
    ("POST", "/users/<int:user_id>/restore"): staff(ALLOWED),
    ("POST", "/users/<int:user_id>/unlock"): staff(ALLOWED),
    ("POST", "/users/bulk"): staff(ALLOWED),
    ("GET", "/users/suggestions"): staff(200),  # the command palette's (test_palette.py)
    ("POST", "/users/<int:user_id>/invitation/resend"): staff(ALLOWED),
    ("POST", "/users/<int:user_id>/invitation/revoke"): staff(ALLOWED),
    # Importing users from CSV: staff; a job is its importer's and the Admins' (test_imports.py).
    ("GET", "/users/import"): staff(200),
    ("POST", "/users/import"): staff(ALLOWED),
    ("GET", "/users/import/<int:job_id>"): staff(404),
    ("GET", "/users/import/<int:job_id>/progress"): staff(404),
    ("GET", "/users/import/<int:job_id>/result.csv"): staff(404),
    ("GET", "/users/import/<int:job_id>/rows/<int:line>/edit"): staff(404),
    ("POST", "/users/import/<int:job_id>/rows/<int:line>"): staff(ALLOWED),
    ("POST", "/users/import/<int:job_id>/mapping"): staff(ALLOWED),
    ("POST", "/users/import/<int:job_id>/start"): staff(ALLOWED),
    ("POST", "/users/import/<int:job_id>/cancel"): staff(ALLOWED),
    # Another user's sessions (shown on the user's page): Admins only.
    ("POST", "/users/<int:user_id>/sessions/<sid>/end"): admins(ALLOWED),
    ("POST", "/users/<int:user_id>/sessions/end-all"): admins(ALLOWED),
    # The audit log: read-only, for staff.
    ("GET", "/audit"): staff(200),
    ("GET", "/audit.csv"): staff(200),
    # One event, and reverting it: whether this viewer may revert this event is decided on the
    # event and its user (tests/test_revert.py).
    ("GET", "/audit/<int:event_id>"): staff(ALLOWED),
    ("GET", "/audit/<int:event_id>/revert"): staff(ALLOWED),
    ("POST", "/audit/<int:event_id>/revert"): staff(ALLOWED),
    # The outbox (development): Admins only; production answers 404.
    ("GET", "/mail"): admins(200),
}

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def app_routes(app) -> dict[tuple[str, str], object]:
    """(method, rule) -> the werkzeug Rule, for every route but static files."""
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted(rule.methods - IGNORED_METHODS):
            routes[(method, rule.rule)] = rule
    return routes


def concrete_path(rule, number: int) -> str:
    """The rule with each variable filled: numbers with `number`, anything else with a dummy."""
    def fill(match):
        name = match.group(1).split(":")[-1]
        return str(number) if isinstance(rule._converters.get(name), IntegerConverter) else "dummy"
    return re.sub(r"<([^>]+)>", fill, rule.rule)


def outcome(response):
    if is_login_redirect(response):
        return LOGIN
    if response.status_code in (301, 302, 303, 307, 308):
        return f"redirect to {location(response)}"
    return response.status_code


def as_expected(expected, response) -> bool:
    got = outcome(response)
    if expected == ALLOWED:
        return got != LOGIN and response.status_code not in (403, 405) and response.status_code < 500
    if expected == DASHBOARD:
        return got == "redirect to /dashboard"
    return got == expected


async def request_as(app, user_id, method: str, path: str):
    client = app.test_client()
    if user_id is not None:
        await open_session(app, client, user_id)
    if method == "GET":
        return await client.get(path)
    csrf = await token(client)
    return await client.open(path, method=method, form={"csrf_token": csrf},
                             headers={"X-CSRF-Token": csrf})


async def test_every_route_has_a_declared_rule(app):
    undeclared = sorted(set(app_routes(app)) - set(EXPECTED))
    assert not undeclared, f"routes without an entry in EXPECTED: {undeclared}"


async def test_every_declared_rule_is_a_route(app):
    stale = sorted(set(EXPECTED) - set(app_routes(app)))
    assert not stale, f"EXPECTED names routes the app no longer has: {stale}"


@pytest.mark.parametrize("role", ROLES)
async def test_route_role_matrix(app, make_user, role):
    user_id = None if role == ANONYMOUS else (await make_user(role=role))["id"]
    wrong = []
    for (method, rule_text), rule in sorted(app_routes(app).items(), key=lambda kv: kv[0][::-1]):
        expected = EXPECTED.get((method, rule_text), {}).get(role, "an entry in EXPECTED")
        target = (await make_user(role="Customer"))["id"] if rule.arguments else 0
        response = await request_as(app, user_id, method, concrete_path(rule, target))
        if not as_expected(expected, response):
            wrong.append(f"{method} {rule_text} as {role}: expected {expected}, got {outcome(response)}")
    assert not wrong, "\n".join(wrong)


async def test_a_route_that_declares_no_roles_is_refused_to_everyone(app, make_user):
    async def undeclared():
        return "should never be seen"
    app.add_url_rule("/undeclared-for-test", "undeclared_for_test", undeclared)
    admin = await make_user(role="Admin")
    for user_id in (None, admin["id"]):
        response = await request_as(app, user_id, "GET", "/undeclared-for-test")
        assert response.status_code == 403
        assert "should never be seen" not in await text(response)


async def test_htmx_requests_follow_the_same_rules(app, make_user):
    """An anonymous htmx request is told where to log in instead of being redirected."""
    client = app.test_client()
    response = await client.get("/profile", headers={"HX-Request": "true", "HX-Target": "main"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login?next=%2Fprofile"


# ---- CSRF ------------------------------------------------------------------------------

@pytest.fixture
async def signed_in_client(app, make_user):
    alice, client = await signed_in(app, make_user, "Customer", username="alice")
    await token(client)  # the browser has a page, so its session holds a CSRF token
    client.user_id = alice["id"]
    return client


async def assert_still_signed_in(client, db):
    assert (await client.get("/dashboard")).status_code == 200
    assert len(await session_rows(db, client.user_id)) == 1
    assert await audit_rows(db, "logout") == []


async def test_logout_without_a_token_is_refused(signed_in_client, db):
    response = await signed_in_client.post("/logout", form={})
    assert response.status_code == 403
    await assert_still_signed_in(signed_in_client, db)


async def test_logout_with_another_browsers_token_is_refused(app, signed_in_client, db):
    someone_else = app.test_client()
    foreign = csrf_from(await text(await someone_else.get("/login")))
    assert foreign != await token(signed_in_client)
    response = await signed_in_client.post("/logout", form={"csrf_token": foreign})
    assert response.status_code == 403
    response = await signed_in_client.post("/logout", headers={"X-CSRF-Token": foreign})
    assert response.status_code == 403
    await assert_still_signed_in(signed_in_client, db)


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "http://evil.example"},
], ids=["sec-fetch-cross-site", "sec-fetch-same-site", "foreign-origin"])
async def test_a_cross_site_logout_is_refused_even_with_the_right_token(signed_in_client, db, headers):
    response = await post(signed_in_client, "/logout", headers=headers)
    assert response.status_code == 403
    await assert_still_signed_in(signed_in_client, db)


@pytest.mark.parametrize("headers", [
    {},
    {"Sec-Fetch-Site": "same-origin"},
    {"Origin": "http://localhost"},
], ids=["no-headers", "sec-fetch-same-origin", "own-origin"])
async def test_a_same_origin_logout_with_the_token_works(signed_in_client, db, headers):
    response = await post(signed_in_client, "/logout", headers=headers)
    assert response.status_code == 303
    assert await session_rows(db, signed_in_client.user_id) == []


async def test_login_without_a_token_is_refused(client, db, make_user):
    await make_user(username="alice")
    await client.get("/login")
    response = await client.post("/login", form={"identifier": "alice", "password": "whatever"})
    assert response.status_code == 403
    assert await audit_rows(db, "login_failed") == []
    assert is_login_redirect(await client.get("/dashboard"))
