"""Logging in and out over HTTP: identifiers, failures, `next`, cookies, rehash, throttling."""
import json
import re

import pytest
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import update

from conftest import PASSWORD, csrf_from
from helpers import (
    audit_rows, cookie_value, element_text, htmx, input_value, is_login_redirect,
    load_auth_token, location, login, login_ok, normalised, open_session, post, session_rows,
    set_auth_cookie, set_cookie_line, text, token, unlock_throttle, user_row,
)
from web.accounts import passwords
from web.accounts import sessions as web_sessions
from web.core.db import utcnow
from web.core.tables import users

WRONG = "not the right password at all"


# ---- identifiers -----------------------------------------------------------------------

@pytest.mark.parametrize("identifier", ["alice", "ALICE", "alice@example.com", "Alice@EXAMPLE.com"])
async def test_login_by_username_or_email_in_any_case(client, make_user, identifier):
    await make_user(username="alice", email="alice@example.com")
    response = await login(client, identifier)
    assert response.status_code == 303 and location(response) == "/dashboard"
    dashboard = await client.get("/dashboard")
    assert dashboard.status_code == 200
    assert "Hello, alice" in await text(dashboard)


async def test_login_by_htmx_answers_with_hx_location(client, make_user):
    await make_user(username="alice")
    response = await login(client, "alice", headers=htmx("login-form"))
    assert response.status_code == 200
    assert response.headers["HX-Location"] == "/dashboard"
    assert (await client.get("/dashboard")).status_code == 200


def anonymised(html: str, identifier: str) -> str:
    """The page without what legitimately differs: the CSRF tokens (masked afresh at every
    use) and the echoed identifier."""
    return normalised(html).replace(f'value="{identifier}"', 'value="IDENTIFIER"')


async def test_failures_look_the_same_for_unknown_wrong_password_and_deactivated(app, make_user):
    await make_user(username="alice")
    await make_user(username="dormant", active=False)
    answers = {}
    for identifier, password in (("nobody", PASSWORD), ("alice", WRONG), ("dormant", PASSWORD)):
        response = await login(app.test_client(), identifier, password)
        answers[identifier] = (response.status_code, anonymised(await text(response), identifier),
                               set_cookie_line(response))
    statuses = {status for status, _, _ in answers.values()}
    bodies = {body for _, body, _ in answers.values()}
    assert statuses == {401}
    assert len(bodies) == 1
    assert "Wrong username, email or password." in bodies.pop()
    assert all(cookie is None for _, _, cookie in answers.values())


async def test_deactivated_account_cannot_log_in(client, make_user):
    await make_user(username="dormant", active=False)
    response = await login(client, "dormant")
    assert response.status_code == 401
    assert is_login_redirect(await client.get("/dashboard"))


async def test_soft_deleted_account_cannot_log_in(client, db, make_user):
    gone = await make_user(username="gone")
    async with db.write() as conn:
        await conn.execute(update(users).where(users.c.id == gone["id"]).values(deleted_at=utcnow()))
    response = await login(client, "gone")
    assert response.status_code == 401
    assert "Wrong username, email or password." in await text(response)
    assert set_cookie_line(response) is None


async def test_each_failure_is_audited_with_the_identifier_and_never_the_password(app, db, make_user):
    alice = await make_user(username="alice")
    dormant = await make_user(username="dormant", active=False)
    attempts = [("nobody", WRONG), ("ALICE", WRONG), ("dormant", PASSWORD)]
    for identifier, password in attempts:
        await login(app.test_client(), identifier, password)
    events = await audit_rows(db, "login_failed")
    assert [e.changes["identifier"] for e in events] == [[None, i] for i, _ in attempts]
    assert [e.target_id for e in events] == [None, alice["id"], dormant["id"]]
    for event in events:
        dumped = json.dumps(event.changes)
        assert WRONG not in dumped and PASSWORD not in dumped


# ---- next ------------------------------------------------------------------------------

async def test_anonymous_dashboard_redirects_to_login_with_next(client):
    response = await client.get("/dashboard")
    assert response.status_code in (302, 303)
    assert location(response) == "/login?next=%2Fdashboard"
    form = await text(await client.get(location(response)))
    assert input_value(form, "next") == "/dashboard"


async def test_login_goes_to_a_local_next(client, make_user):
    await make_user(username="alice")
    response = await login(client, "alice", next="/profile")
    assert response.status_code == 303 and location(response) == "/profile"


UNSAFE_NEXT = ["https://evil.example", "//evil.example", "/\\evil.example", "javascript:alert(1)",
               "/\t/evil"]


@pytest.mark.parametrize("target", UNSAFE_NEXT)
async def test_login_refuses_a_next_off_this_site(client, make_user, target):
    await make_user(username="alice")
    response = await login(client, "alice", next=target)
    assert response.status_code == 303
    assert location(response) == "/dashboard"


@pytest.mark.parametrize("target", UNSAFE_NEXT)
async def test_login_form_drops_a_next_off_this_site(client, target):
    response = await client.get("/login", query_string={"next": target})
    assert response.status_code == 200
    assert input_value(await text(response), "next") is None


# ---- the cookie and the session -------------------------------------------------------

@pytest.mark.parametrize("remember", [False, True], ids=["session-cookie", "remember-me"])
async def test_remember_me_decides_the_cookie_lifetime(client, db, make_user, config, remember):
    alice = await make_user(username="alice")
    extra = {"remember": "on"} if remember else {}
    response = await login(client, "alice", **extra)
    assert response.status_code == 303
    cookie = set_cookie_line(response)
    assert cookie is not None
    attributes = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "path=/" in attributes
    if remember:
        assert f"max-age={config.remember_absolute}" in attributes
    else:
        assert not any(a.startswith(("max-age", "expires")) for a in attributes), cookie
    (row,) = await session_rows(db, alice["id"])
    assert row.remember is remember
    lifetime = config.remember_absolute if remember else config.session_absolute
    assert abs((row.expires_at - row.created_at).total_seconds() - lifetime) < 5


async def test_every_login_gets_a_new_random_session(app, client, db, make_user):
    alice = await make_user(username="alice")
    await login_ok(client, "alice")
    first = cookie_value(client)
    await login_ok(client, "alice")
    second = cookie_value(client)
    assert first and second and first != second

    # Logging in again in the same browser replaces the session: the first one is gone.
    ids = {row.id for row in await session_rows(db, alice["id"])}
    tokens = [load_auth_token(app, cookie) for cookie in (first, second)]
    assert ids == {web_sessions.session_id(tokens[1])}
    assert web_sessions.session_id(tokens[0]) != web_sessions.session_id(tokens[1])
    for cookie, token in zip((first, second), tokens):
        assert token != str(alice["id"]) and len(token) >= 43  # 256 random bits
        assert str(alice["id"]) != cookie.split(".")[0]
    assert not (ids & set(tokens))  # the table keeps hashes, not the tokens


async def test_login_gives_a_new_csrf_token(client, make_user):
    await make_user(username="alice")
    before = csrf_from(await text(await client.get("/login")))
    await login_ok(client, "alice")
    after = csrf_from(await text(await client.get("/profile")))
    assert before != after


async def test_outdated_hash_is_upgraded_at_login(client, db, make_user, production_hashing):
    alice = await make_user(username="alice")
    weak = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8192),)).hash(PASSWORD)
    async with db.write() as conn:
        await conn.execute(update(users).where(users.c.id == alice["id"]).values(password_hash=weak))
    assert (await user_row(db, alice["id"])).last_login_at is None

    await login_ok(client, "alice")

    account = await user_row(db, alice["id"])
    assert account.password_hash != weak
    assert passwords.hasher.verify(PASSWORD, account.password_hash)
    assert not passwords.hasher.hashers[0].check_needs_rehash(account.password_hash)
    assert account.last_login_at is not None
    (event,) = await audit_rows(db, "login")
    assert event.actor_id == alice["id"] and event.target_id == alice["id"]


# ---- throttling ------------------------------------------------------------------------

def wait_seconds(html: str) -> int:
    match = re.search(r"Try again in (\d+) seconds", element_text(html, "login-form-error"))
    assert match, html
    return int(match.group(1))


async def test_five_failures_lock_the_account_until_the_lock_ends(app, db, make_user):
    await make_user(username="alice")
    # From five addresses, so that only the account's counter can lock.
    for n in range(5):
        response = await login(app.test_client(), "alice", WRONG, ip=f"203.0.113.{n}")
        assert response.status_code == 401

    client = app.test_client()
    locked = await login(client, "alice", PASSWORD, ip="203.0.113.99")
    assert locked.status_code == 429
    assert 1 <= wait_seconds(await text(locked)) <= 15
    assert locked.headers["Retry-After"] == str(wait_seconds(await text(locked)))
    assert set_cookie_line(locked) is None
    assert is_login_redirect(await client.get("/dashboard"))

    await unlock_throttle(db)  # as if the 15 s had passed
    response = await login(client, "alice", PASSWORD, ip="203.0.113.99")
    assert response.status_code == 303
    assert (await client.get("/dashboard")).status_code == 200


async def test_failures_on_many_identifiers_lock_the_address(app, db, make_user):
    await make_user(username="alice")
    for n in range(5):
        response = await login(app.test_client(), f"unknown{n}", WRONG, ip="203.0.113.5")
        assert response.status_code == 401

    locked = await login(app.test_client(), "alice", PASSWORD, ip="203.0.113.5")
    assert locked.status_code == 429
    assert wait_seconds(await text(locked)) >= 1
    # The account is not locked: from elsewhere it logs in.
    elsewhere = await login(app.test_client(), "alice", PASSWORD, ip="198.51.100.5")
    assert elsewhere.status_code == 303


async def test_failures_by_username_also_lock_logins_by_email(app, make_user):
    await make_user(username="alice", email="alice@example.com")
    for n in range(5):
        await login(app.test_client(), "alice", WRONG, ip=f"203.0.113.{n}")
    response = await login(app.test_client(), "alice@example.com", PASSWORD, ip="203.0.113.99")
    assert response.status_code == 429


# ---- logout ----------------------------------------------------------------------------

async def test_logout_ends_the_session_and_the_old_cookie_dies_with_it(app, client, db, make_user):
    alice = await make_user(username="alice")
    await login_ok(client, "alice")
    saved = cookie_value(client)

    csrf = await token(client)
    response = await post(client, "/logout", {"csrf_token": csrf})
    assert response.status_code == 303 and location(response) == "/"
    assert await session_rows(db, alice["id"]) == []
    assert is_login_redirect(await client.get("/dashboard"))
    assert await token(client) != csrf  # the next visitor of this browser gets a new token

    replay = app.test_client()
    set_auth_cookie(replay, saved)
    assert is_login_redirect(await replay.get("/dashboard"))

    (event,) = await audit_rows(db, "logout")
    assert event.actor_id == alice["id"]


async def test_logout_by_get_is_refused_and_changes_nothing(app, client, db, make_user):
    alice = await make_user(username="alice")
    await open_session(app, client, alice["id"])
    response = await client.get("/logout")
    assert response.status_code == 405
    assert len(await session_rows(db, alice["id"])) == 1
    assert (await client.get("/dashboard")).status_code == 200
    assert await audit_rows(db, "logout") == []


# ---- htmx without a session -----------------------------------------------------------

async def test_htmx_request_without_session_gets_401_and_hx_redirect(client):
    response = await client.get("/dashboard", headers=htmx("main"))
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login?next=%2Fdashboard"
    body = await text(response)
    assert "<form" not in body and "identifier" not in body


async def test_htmx_post_without_session_redirects_back_to_the_current_page(client):
    headers = htmx("profile-email-form", **{"HX-Current-URL": "http://localhost/profile"})
    response = await client.post("/profile/email", form={"email": "x@example.com"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login?next=%2Fprofile"
    assert "<form" not in await text(response)
