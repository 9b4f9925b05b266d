"""Password reset (web/accounts/recovery.py): "Forgot password?" mails a single-use link
whatever was typed answers the same, both limits hold, every invalidation kills the link,
a reset ends every session without logging anyone in. In-process against the outbox table,
then over HTTP against the real server and SMTP server (PostgreSQL: two workers)."""
import asyncio
import re
import secrets
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import insert, select, update

from conftest import PASSWORD
from helpers import (
    audit_rows, htmx, is_login_redirect, location, login, mail_to, mailbox_address, mailed_url, normalised,
    open_session, post, posted, posted_at_once, rows, send, sent_once, session_rows, signed_in, text, user_row,
)
from web.accounts import passwords, queries, tokens
from web.core.db import utcnow
from web.core.tables import account_tokens, login_throttle, outbox

SENT = "If an account exists for that name or address, we sent a link to its email address. It is valid for 30 minutes."
INVALID = "This link is invalid or has expired"
NEW_PASSWORD = "lantern quarry velvet orbit"
RESET_LINK = re.compile(r"http://[^\s\"<>]+/reset-password/([A-Za-z0-9_-]+)")


# ---- helpers ---------------------------------------------------------------------------

async def ask(client, identifier: str, ip: str = "192.0.2.1", **kwargs):
    """Submit the "Forgot password?" form from `ip`."""
    return await post(client, "/forgot-password", {"identifier": identifier},
                      scope_base={"client": (ip, 50000)}, **kwargs)


async def link_token(db, address: str, nth: int = -1) -> str:
    """The token of the `nth` reset link mailed to `address` (the outbox keeps it until sent)."""
    messages = await mail_to(db, address, "reset")
    assert messages, f"no reset mail to {address}"
    found = RESET_LINK.search(messages[nth].text_body)
    assert found, messages[nth].text_body
    return found.group(1)


async def requested(client, db, account: dict) -> str:
    """Ask for a link for `account` and return its token."""
    response = await ask(client, account["username"], ip=f"198.51.100.{secrets.randbelow(250) + 1}")
    assert response.status_code == 200
    return await link_token(db, account["email"])


async def reset(client, token: str, password: str = NEW_PASSWORD, confirm: str | None = None, **kwargs):
    form = {"password": password, "password_confirm": password if confirm is None else confirm}
    return await post(client, f"/reset-password/{token}", form, **kwargs)


async def assert_invalid(client, token: str) -> None:
    """The link's page and its form both answer the one "invalid or expired" page."""
    for response in (await client.get(f"/reset-password/{token}"), await reset(client, token)):
        body = await text(response)
        assert response.status_code == 410, body[:300]
        assert INVALID in body and 'href="/forgot-password"' in body


async def assert_valid(client, token: str) -> None:
    response = await client.get(f"/reset-password/{token}")
    assert response.status_code == 200, (await text(response))[:300]


# ---- asking for a link -----------------------------------------------------------------

async def test_the_login_page_links_to_forgot_password(client):
    body = await text(await client.get("/login"))
    assert '<a href="/forgot-password">Forgot password?</a>' in body


async def test_forgot_password_asks_for_a_username_or_email(client):
    response = await client.get("/forgot-password")
    body = await text(response)
    assert response.status_code == 200
    assert 'action="/forgot-password"' in body and 'name="identifier"' in body
    assert '<label for="forgot-identifier">Username or email</label>' in body


@pytest.mark.parametrize("typed", ["alice", "ALICE@example.COM"])
async def test_a_request_mails_a_link_to_the_accounts_address(client, db, make_user, typed):
    alice = await make_user(username="alice", email="alice@example.com")
    response = await ask(client, typed)
    assert response.status_code == 200 and SENT in await text(response)
    [message] = await mail_to(db, "alice@example.com", "reset")
    assert message.subject == "Reset your password · Gatehouse"
    token = RESET_LINK.search(message.text_body).group(1)
    assert f"http://localhost:8000/reset-password/{token}" in message.text_body
    assert f'href="http://localhost:8000/reset-password/{token}"' in message.html_body
    assert "within 30 minutes" in message.text_body and "192.0.2.1" in message.text_body
    assert message.secrets == [token]  # blanked once sent
    stored = await rows(db, select(account_tokens))
    assert [(row.user_id, row.purpose, row.id) for row in stored] == [(alice["id"], "reset", tokens.digest(token))]


async def test_the_answer_is_the_same_whether_or_not_an_account_may_reset(app, db, make_user):
    await make_user(username="alice")
    await make_user(username="dormant", active=False)
    deleted = await make_user(username="gone")
    async with db.write() as conn:
        await queries.soft_delete(conn, deleted["id"])
        await queries.create_invited_user(conn, "invitee", "invitee@example.com", "Customer")
    client = app.test_client()
    answers = {}
    for n, typed in enumerate(("alice", "nobody", "nobody@example.com", "dormant", "gone", "invitee@example.com")):
        for headers in ({}, htmx("forgot-password")):
            response = await ask(client, typed, ip=f"203.0.113.{n}", headers=headers)
            answers[(typed, bool(headers))] = (response.status_code, normalised(await text(response)),
                                               sorted(response.headers.items()))
    for with_htmx in (False, True):
        seen = {(status, body, str(headers)) for (_, hx), (status, body, headers) in answers.items() if hx == with_htmx}
        assert len(seen) == 1, seen
    status, body, _ = answers[("nobody", False)]
    assert status == 200 and SENT in body
    assert [m.recipient for m in await rows(db, select(outbox))] == ["alice@example.com"] * 2


async def test_an_empty_request_is_refused_next_to_its_field(client, db):
    response = await ask(client, "   ")
    body = await text(response)
    assert response.status_code == 422
    assert re.search(r'<p id="forgot-identifier-error" class="error" role="alert">Type your username or email', body)
    assert 'aria-invalid="true"' in body
    assert await rows(db, select(outbox)) == []


async def test_requests_are_limited_per_client_address(app, db, make_user):
    await make_user(username="alice")
    client = app.test_client()
    for n in range(5):
        assert (await ask(client, f"someone{n}", ip="192.0.2.7")).status_code == 200
    refused = await ask(client, "alice", ip="192.0.2.7")
    body = await text(refused)
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60
    assert "Too many reset requests from your network. Try again in" in body
    assert await mail_to(db, "alice@example.com", "reset") == []  # nothing sent, nothing said about alice
    assert (await ask(client, "alice", ip="192.0.2.8")).status_code == 200  # another address may
    assert len(await mail_to(db, "alice@example.com", "reset")) == 1


async def test_requests_are_limited_per_account_without_saying_so(app, db, make_user):
    alice = await make_user(username="alice")
    client = app.test_client()
    for n in range(3):
        assert (await ask(client, "alice", ip=f"192.0.2.{n}")).status_code == 200
    over = await ask(client, "alice", ip="192.0.2.99")
    assert over.status_code == 200 and SENT in await text(over)
    assert len(await mail_to(db, alice["email"], "reset")) == 3
    events = await audit_rows(db, "password_reset_requested")
    assert [e.changes["mailed"] for e in events] == [[None, True]] * 3 + [[None, False]]
    # The hour is over (the stored window moved back, no waiting): links are sent again.
    async with db.write() as conn:
        await conn.execute(update(login_throttle).where(login_throttle.c.key == f"reset-account:{alice['id']}")
                           .values(window_start=utcnow() - timedelta(hours=1, seconds=1)))
    assert (await ask(client, "alice", ip="192.0.2.100")).status_code == 200
    assert len(await mail_to(db, alice["email"], "reset")) == 4


async def test_requests_are_audited_without_keeping_what_looks_like_a_password(client, db, make_user):
    alice = await make_user(username="alice")
    await ask(client, "alice@example.com", ip="192.0.2.1")
    await ask(client, "no.such.user", ip="192.0.2.2")
    await ask(client, "correct horse battery staple!", ip="192.0.2.3")
    events = await audit_rows(db, "password_reset_requested")
    assert [(e.target_id, e.actor_id, e.ip, e.changes) for e in events] == [
        (alice["id"], None, "192.0.2.1", {"mailed": [None, True]}),
        (None, None, "192.0.2.2", {"identifier": [None, "no.such.user"]}),
        (None, None, "192.0.2.3", {"identifier": [None, "(unrecognised)"]}),
    ]


# ---- the link --------------------------------------------------------------------------

async def test_opening_the_link_shows_the_form_and_does_not_use_it(client, db, make_user):
    alice = await make_user(username="alice")
    token = await requested(client, db, alice)
    for _ in range(2):
        response = await client.get(f"/reset-password/{token}")
        body = await text(response)
        assert response.status_code == 200
        assert f'action="/reset-password/{token}"' in body and "<strong>alice</strong>" in body
        assert 'autocomplete="new-password"' in body
    assert len(await rows(db, select(account_tokens))) == 1


@pytest.mark.parametrize("token", ["nothing-like-a-token", "x" * 101, "%C3%A9t%C3%A9"])
async def test_a_link_that_never_was_answers_the_invalid_page(client, db, token):
    await assert_invalid(client, token)


async def test_a_reset_sets_the_password_ends_every_session_and_does_not_log_in(app, client, db, make_user):
    alice = await make_user(username="alice")
    elsewhere = app.test_client()
    await open_session(app, elsewhere, alice["id"])
    await open_session(app, client, alice["id"])  # even the browser that resets
    token = await requested(client, db, alice)
    response = await reset(client, token)
    assert response.status_code == 303 and location(response) == "/login"
    assert await session_rows(db, alice["id"]) == []
    assert is_login_redirect(await elsewhere.get("/dashboard"))
    login_page = await text(await client.get("/login"))
    assert "Password changed. Log in with your new password." in login_page
    assert 'id="login-form"' in login_page  # nobody is signed in
    stored = (await user_row(db, alice["id"])).password_hash
    assert (await passwords.verify(NEW_PASSWORD, stored))[0]
    assert not (await passwords.verify(PASSWORD, stored))[0]
    [event] = await audit_rows(db, "password_reset")
    assert (event.actor_id, event.target_id, event.changes) == (alice["id"], alice["id"], {"sessions_ended": [None, 2]})
    [notice] = await mail_to(db, alice["email"], "password_changed")
    assert "with a reset link sent to this address" in notice.text_body
    assert (await login(app.test_client(), "alice", NEW_PASSWORD)).status_code == 303


async def test_a_reset_by_htmx_goes_to_the_login_page(client, db, make_user):
    alice = await make_user(username="alice")
    token = await requested(client, db, alice)
    response = await reset(client, token, headers=htmx("reset-password"))
    assert response.status_code == 200 and response.headers["HX-Location"] == "/login"
    assert "Password changed. Log in with your new password." in await text(await client.get("/login"))


@pytest.mark.parametrize("password, confirm, field, says", [
    ("too short", None, "reset-password-new", "Use at least 15 characters"),
    ("alice walks the quiet harbor", None, "reset-password-new", "must not contain your username"),
    (NEW_PASSWORD, NEW_PASSWORD + "!", "reset-password-confirm", "The two passwords differ."),
])
async def test_the_reset_form_applies_the_password_policy(client, db, make_user, password, confirm, field, says):
    alice = await make_user(username="alice")
    token = await requested(client, db, alice)
    before = (await user_row(db, alice["id"])).password_hash
    response = await reset(client, token, password, confirm, headers=htmx("reset-password"))
    body = await text(response)
    assert response.status_code == 422
    error = re.search(rf'<p id="{field}-error" class="error" role="alert">([^<]+)</p>', body)
    assert error and says in error.group(1), body
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', body)
    assert (await user_row(db, alice["id"])).password_hash == before
    await assert_valid(client, token)  # a refused form does not use the link


async def test_a_reset_lifts_the_login_lock_and_the_resetting_browser_logs_in_at_once(app, client, db, make_user):
    alice = await make_user(username="alice")
    ip = "192.0.2.50"
    locked_until = utcnow() + timedelta(minutes=10)
    async with db.write() as conn:
        for key in (f"account:{alice['id']}", f"ip:{ip}"):
            await conn.execute(insert(login_throttle).values(key=key, failures=9, window_start=utcnow(),
                                                             locked_until=locked_until))
    assert (await login(app.test_client(), "alice", ip="192.0.2.51")).status_code == 429
    token = await requested(client, db, alice)
    assert (await reset(client, token, scope_base={"client": (ip, 50000)})).status_code == 303
    # Its network is still locked, but this browser holds the account's device cookie now.
    assert (await login(client, "alice", NEW_PASSWORD, ip=ip)).status_code == 303
    assert (await login(app.test_client(), "alice", NEW_PASSWORD, ip="192.0.2.52")).status_code == 303


# ---- what kills a link -----------------------------------------------------------------

async def test_a_link_works_once(client, db, make_user):
    alice = await make_user(username="alice")
    token = await requested(client, db, alice)
    assert (await reset(client, token)).status_code == 303
    await assert_invalid(client, token)


async def test_a_newer_request_replaces_the_link(client, db, make_user):
    alice = await make_user(username="alice")
    first = await requested(client, db, alice)
    second = await requested(client, db, alice)
    await assert_invalid(client, first)
    await assert_valid(client, second)


async def test_a_password_change_from_the_profile_kills_the_link(app, client, db, make_user):
    alice = await make_user(username="alice")
    token = await requested(client, db, alice)
    owner = app.test_client()
    await open_session(app, owner, alice["id"])
    changed = await post(owner, "/profile/password", {"current_password": PASSWORD, "password": NEW_PASSWORD,
                                                      "password_confirm": NEW_PASSWORD})
    assert changed.status_code == 200
    await assert_invalid(client, token)


async def test_the_link_expires_after_30_minutes(client, db, make_user):
    alice = await make_user(username="alice")
    token = await requested(client, db, alice)
    [row] = await rows(db, select(account_tokens))
    assert row.expires_at - row.created_at == timedelta(minutes=30)
    async with db.write() as conn:
        await conn.execute(update(account_tokens).values(expires_at=utcnow() - timedelta(seconds=1)))
    await assert_invalid(client, token)


async def test_deactivation_by_an_admin_kills_the_link_for_good(app, client, db, make_user):
    alice = await make_user(username="alice")
    token = await requested(client, db, alice)
    _, admin = await signed_in(app, make_user, "Admin")
    version = (await user_row(db, alice["id"])).version
    off = await send(admin, f"/users/{alice['id']}", {"version": version, "username": "alice",
                                                      "email": alice["email"], "role": "Customer"}, hx=False)
    assert off.status_code == 303 and not (await user_row(db, alice["id"])).active
    assert await rows(db, select(account_tokens)) == []
    await assert_invalid(client, token)
    async with db.write() as conn:  # reactivated: the link stays dead
        await queries.update_user(conn, alice["id"], {"active": True})
    await assert_invalid(client, token)


async def test_deletion_by_an_admin_kills_the_link_for_good(app, client, db, make_user):
    alice = await make_user(username="alice")
    token = await requested(client, db, alice)
    _, admin = await signed_in(app, make_user, "Admin")
    assert (await send(admin, f"/users/{alice['id']}/delete", hx=False)).status_code == 303
    await assert_invalid(client, token)
    assert (await send(admin, f"/users/{alice['id']}/restore", hx=False)).status_code in (200, 303)
    assert (await user_row(db, alice["id"])).deleted_at is None
    await assert_invalid(client, token)


async def test_a_deactivated_deleted_or_invited_account_gets_no_link(client, db, make_user):
    await make_user(username="dormant", active=False)
    gone = await make_user(username="gone")
    async with db.write() as conn:
        await queries.soft_delete(conn, gone["id"])
        await queries.create_invited_user(conn, "invitee", "invitee@example.com", "Customer")
    for n, typed in enumerate(("dormant", "gone", "invitee")):
        assert (await ask(client, typed, ip=f"192.0.2.{n}")).status_code == 200
    assert await rows(db, select(outbox)) == [] and await rows(db, select(account_tokens)) == []


async def test_of_two_submits_of_one_link_at_once_exactly_one_wins(app, db, make_user):
    alice = await make_user(username="alice")
    token = await requested(app.test_client(), db, alice)
    clients = [app.test_client() for _ in range(2)]
    for client in clients:
        await assert_valid(client, token)
    answers = await asyncio.gather(*(reset(client, token, f"{NEW_PASSWORD} {n}") for n, client in enumerate(clients)))
    assert sorted(a.status_code for a in answers) == [303, 410]
    winner = next(n for n, a in enumerate(answers) if a.status_code == 303)
    assert (await passwords.verify(f"{NEW_PASSWORD} {winner}", (await user_row(db, alice["id"])).password_hash))[0]
    assert len(await audit_rows(db, "password_reset")) == 1
    assert len(await mail_to(db, alice["email"], "password_changed")) == 1


# ---- over HTTP: the real server, the real SMTP server ----------------------------------

async def test_the_reset_flow_over_http_with_the_message_sent_once(mail_server, db, make_user):
    address = mailbox_address("reset")
    await make_user(username="http.reset", email=address)
    async with httpx.AsyncClient(base_url=mail_server.url, timeout=30) as http:
        asked = await posted(http, "/forgot-password", {"identifier": address.upper()})
        assert asked.status_code == 200 and SENT in asked.text
        url = mailed_url(await mail_server.mailbox.next_to(address), "reset-password")
        assert url.startswith(mail_server.url + "/reset-password/")
        row = await sent_once(db, address, "reset")
        assert row.attempts == 1 and url.rsplit("/", 1)[1] not in row.text_body  # blanked once sent
        path = url.removeprefix(mail_server.url)
        done = await posted(http, path, {"password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD})
        assert done.status_code == 303 and done.headers["Location"] == "/login"
        notice = await mail_server.mailbox.next_to(address, 2)
        assert notice["Subject"] == "Your password was changed · Gatehouse"
        logged_in = await posted(http, "/login", {"identifier": "http.reset", "password": NEW_PASSWORD})
        assert logged_in.status_code == 303 and logged_in.headers["Location"] == "/dashboard"
        assert (await http.get(path)).status_code == 410
    assert [m["Subject"] for m in mail_server.mailbox.to(address)].count("Reset your password · Gatehouse") == 1


async def test_two_submits_of_one_link_at_once_over_http_exactly_one_wins(mail_server, db, make_user):
    address = mailbox_address("race")
    alice = await make_user(username="http.race", email=address)
    async with httpx.AsyncClient(base_url=mail_server.url, timeout=30) as http:
        assert (await posted(http, "/forgot-password", {"identifier": "http.race"})).status_code == 200
    path = mailed_url(await mail_server.mailbox.next_to(address), "reset-password").removeprefix(mail_server.url)
    answers = await posted_at_once(mail_server.url, path, [
        {"password": f"{NEW_PASSWORD} {n}", "password_confirm": f"{NEW_PASSWORD} {n}"} for n in range(2)])
    assert sorted(a.status_code for a in answers) == [303, 410]
    winner = next(n for n, a in enumerate(answers) if a.status_code == 303)
    assert (await passwords.verify(f"{NEW_PASSWORD} {winner}", (await user_row(db, alice["id"])).password_hash))[0]
    assert len(await audit_rows(db, "password_reset")) == 1
    await sent_once(db, address, "password_changed")
