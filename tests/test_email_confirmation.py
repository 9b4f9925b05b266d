"""Confirming the address an account registers with: the link mailed with the account, the
banner until it is opened (or, with REQUIRE_EMAIL_CONFIRMATION=1, no login before), and
"send the link again", which answers the same for any address. In-process against the
outbox table, then over HTTP with the real SMTP server on both databases."""
import secrets
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import event, select, update

from conftest import PASSWORD, make_config
from helpers import (
    audit_rows, element_text, htmx, location, login, mail_to, mailbox_address, mailed_path, mailed_url, normalised,
    open_session, post, posted, rows, run_cli, sent_once, session_rows, text, toasts, user_named, user_row,
)
from web import create_app
from web.accounts import confirmation, queries
from web.accounts.auth import UNCONFIRMED
from web.core.db import utcnow
from web.core.tables import account_tokens, login_throttle, outbox, users

NEWCOMER = {"username": "newcomer", "email": "newcomer@example.com", "password": PASSWORD,
            "password_confirm": PASSWORD}
INVALID = "This link is invalid or has expired"
SENT = "If an account with that address needs confirming, we sent a new link to it."
BANNER = "Confirm your email address:"


async def unconfirmed(db, make_user, **kwargs) -> dict:
    """An account whose address is not confirmed yet (make_user's are)."""
    account = await make_user(**kwargs)
    async with db.write() as conn:
        await conn.execute(update(users).where(users.c.id == account["id"]).values(email_confirmed_at=None))
    return account


def link_for(mailed: list, address: str, nth: int = -1) -> str:
    return mailed_path(mailed, address, "confirm", "/confirm-email/", nth)


async def send_link(app, mailed: list, account: dict) -> str:
    """A confirmation link mailed to `account`, as the app mails one; its path."""
    async with app.app_context():
        async with app.db.write() as conn:
            await confirmation.send_link(conn, await queries.get_user(conn, account["id"]))
    return link_for(mailed, account["email"])


async def register(client, **form):
    return await post(client, "/register", {**NEWCOMER, **form})


async def assert_invalid(client, path: str) -> None:
    """The link's page and its form both answer the one "invalid" page, with a way to get a
    new link."""
    for response in (await client.get(path), await post(client, path)):
        body = await text(response)
        assert response.status_code == 410, body[:300]
        assert INVALID in body and 'action="/confirm-email/resend"' in body


@pytest.fixture
async def strict_app(db, database_url):
    """The app with REQUIRE_EMAIL_CONFIRMATION=1."""
    app = create_app(make_config(database_url, require_email_confirmation=True))
    yield app
    await app.db.dispose()


# ---- the link mailed at registration ----------------------------------------------------

async def test_registering_mails_a_confirmation_link_and_logs_in(client, db):
    response = await register(client)
    assert response.status_code == 303 and location(response) == "/dashboard"
    account = await user_named(db, "newcomer")
    assert account.email_confirmed_at is None
    [message] = await mail_to(db, "newcomer@example.com", "confirm")
    assert message.subject == "Confirm your email address · Gatehouse"
    assert "http://localhost:8000/confirm-email/" in message.text_body
    assert 'href="http://localhost:8000/confirm-email/' in message.html_body
    assert "2 days" in message.text_body and "newcomer" in message.text_body
    assert "<img" not in message.html_body


async def test_a_registration_refused_sends_nothing(client, db, make_user):
    await make_user(username="taken.name")
    assert (await register(client, username="taken.name")).status_code == 422
    assert await rows(db, select(outbox)) == [] and await rows(db, select(account_tokens)) == []


async def test_opening_the_link_shows_a_button_and_confirms_nothing(mailed, app, client, db, make_user):
    alice = await unconfirmed(db, make_user, username="alice")
    path = await send_link(app, mailed, alice)
    for _ in range(2):  # a mail scanner, then the person
        response = await client.get(path)
        html = await text(response)
        assert response.status_code == 200
        assert f'action="{path}"' in html and f"Confirm {alice['email']}</button>" in html
    assert (await user_row(db, alice["id"])).email_confirmed_at is None


async def test_confirming_sets_the_address_confirmed_audits_and_sends_to_login(mailed, app, client, db, make_user):
    alice = await unconfirmed(db, make_user, username="alice")
    response = await post(client, await send_link(app, mailed, alice))
    assert response.status_code == 303 and location(response) == "/login"
    assert (await user_row(db, alice["id"])).email_confirmed_at is not None
    [event_row] = await audit_rows(db, "email_confirmed")
    assert (event_row.actor_id, event_row.target_id) == (alice["id"], alice["id"])
    assert event_row.changes == {"email_confirmed": [None, alice["email"]]}
    assert "You can log in now" in (await text(await client.get("/login")))


async def test_confirming_when_signed_in_goes_to_the_dashboard_and_the_banner_goes(mailed, app, client, db):
    await register(client)
    assert BANNER in await text(await client.get("/dashboard"))
    response = await post(client, link_for(mailed, "newcomer@example.com"), headers=htmx())
    assert response.headers["HX-Location"] == "/dashboard"
    html = await text(await client.get("/dashboard"))
    assert "Your email address is confirmed." in html and BANNER not in html


@pytest.mark.parametrize("spoil", ["used", "expired", "replaced", "unknown", "address changed", "deactivated"])
async def test_a_link_that_does_not_work_answers_one_page_with_a_way_to_a_new_one(mailed, app, client, db, make_user,
                                                                                  spoil):
    alice = await unconfirmed(db, make_user, username="alice")
    path = await send_link(app, mailed, alice)
    if spoil == "used":
        assert (await post(client, path)).status_code == 303
    elif spoil == "expired":  # the clock moved past its two days
        async with db.write() as conn:
            await conn.execute(update(account_tokens).values(expires_at=utcnow() - timedelta(seconds=1)))
    elif spoil == "replaced":
        assert await send_link(app, mailed, alice) != path
    elif spoil == "unknown":
        path = "/confirm-email/" + secrets.token_urlsafe(32)
    elif spoil == "address changed":
        async with db.write() as conn:
            await queries.update_user(conn, alice["id"], {"email": "elsewhere@example.com"})
    else:
        async with db.write() as conn:
            await queries.update_user(conn, alice["id"], {"active": False})
    await assert_invalid(client, path)


async def test_existing_and_operator_made_accounts_count_as_confirmed(db, database_url, make_user):
    result = run_cli("create-admin", "--username", "root.admin", "--email", "root@example.com",
                     database_url=database_url, stdin="a long passphrase of my own\n")
    assert result.returncode == 0, result.stderr
    assert (await user_named(db, "root.admin")).email_confirmed_at is not None
    assert await rows(db, select(outbox)) == []


# ---- the banner --------------------------------------------------------------------------

async def test_an_unconfirmed_account_sees_the_banner_on_every_page(app, client, db, make_user):
    alice = await unconfirmed(db, make_user, username="alice")
    await open_session(app, client, alice["id"])
    for path in ("/dashboard", "/profile"):
        html = await text(await client.get(path))
        banner = element_text(html, "confirm-banner-text")
        assert banner == f"Confirm your email address: we sent a link to {alice['email']}."
        assert 'action="/confirm-email/send"' in html


async def test_a_confirmed_account_sees_no_banner(app, client, make_user):
    alice = await make_user(username="alice")
    await open_session(app, client, alice["id"])
    assert 'id="confirm-banner"' not in await text(await client.get("/dashboard"))


async def test_the_banner_costs_no_query_of_its_own(app, client, db, make_user):
    """The confirmed state comes with the session read every request makes: a page that reads
    nothing else runs that one statement and still shows the banner."""
    alice = await unconfirmed(db, make_user, username="alice")
    await open_session(app, client, alice["id"])
    statements = []

    def remember(conn, cursor, statement, *args):
        statements.append(statement)
    for engine in app.db.sync_engines:
        event.listen(engine, "before_cursor_execute", remember)
    try:
        response = await client.get("/no-such-page")
    finally:
        for engine in app.db.sync_engines:
            event.remove(engine, "before_cursor_execute", remember)
    assert response.status_code == 404 and BANNER in await text(response)
    # Besides it, a test client (no live broker running) reads the chain head the page's live
    # stream starts at; a serving worker has it in memory.
    [session_read] = [s for s in statements if not s.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK"))
                      and "FROM audit_chain" not in s]
    assert "FROM sessions JOIN users" in session_read and "email_confirmed_at" in session_read


async def test_send_it_again_mails_a_new_link_that_replaces_the_old(mailed, app, client, db, make_user):
    alice = await unconfirmed(db, make_user, username="alice")
    first = await send_link(app, mailed, alice)
    await open_session(app, client, alice["id"])
    response = await post(client, "/confirm-email/send", {"back": "/profile"}, headers=htmx("confirm-banner"))
    assert response.status_code == 200
    html = await text(response)
    assert html.lstrip().startswith('<section id="confirm-banner"') and "<html" not in html
    assert f"We sent a new link to {alice['email']}." in html
    assert len(await mail_to(db, alice["email"], "confirm")) == 2
    assert (await client.get(first)).status_code == 410
    assert (await client.get(link_for(mailed, alice["email"]))).status_code == 200


async def test_send_it_again_without_javascript_goes_back_to_the_page(app, client, db, make_user):
    alice = await unconfirmed(db, make_user, username="alice")
    await open_session(app, client, alice["id"])
    response = await post(client, "/confirm-email/send", {"back": "/profile"})
    assert response.status_code == 303 and location(response) == "/profile"
    assert len(await mail_to(db, alice["email"], "confirm")) == 1
    response = await post(client, "/confirm-email/send", {"back": "//evil.example/"})
    assert location(response) == "/dashboard"


async def test_send_it_again_is_limited_per_account(app, db, make_user):
    alice = await unconfirmed(db, make_user, username="alice")
    for n in range(confirmation.LINKS_PER_ACCOUNT + 1):
        client = app.test_client()  # another network each time: the account's own limit
        await open_session(app, client, alice["id"])
        response = await post(client, "/confirm-email/send", headers=htmx("confirm-banner"),
                              scope_base={"client": (f"198.51.100.{n + 1}", 50000)})
    assert response.status_code == 429
    assert "Too many links asked for. Try again in" in toasts(response, "error")[0]["text"]
    assert len(await mail_to(db, alice["email"], "confirm")) == confirmation.LINKS_PER_ACCOUNT


async def test_send_it_again_once_confirmed_sends_nothing_and_drops_the_banner(app, client, db, make_user):
    alice = await unconfirmed(db, make_user, username="alice")
    await open_session(app, client, alice["id"])
    async with db.write() as conn:
        await queries.confirm_email(conn, alice["id"], alice["email"])
    response = await post(client, "/confirm-email/send", headers=htmx("confirm-banner"))
    assert response.status_code == 200 and await text(response) == ""
    assert toasts(response)[0]["text"] == "Your email address is already confirmed."
    assert await mail_to(db, alice["email"], "confirm") == []


# ---- "send the link again": the same answer for any address -----------------------------

async def resend(client, email: str, ip: str = "192.0.2.7", **kwargs):
    return await post(client, "/confirm-email/resend", {"email": email}, scope_base={"client": (ip, 50000)},
                      **kwargs)


async def test_the_resend_form_answers_the_same_for_any_address(app, db, make_user):
    waiting = await unconfirmed(db, make_user, username="waiting")
    await make_user(username="done")
    gone = await unconfirmed(db, make_user, username="gone", active=False)
    async with db.write() as conn:
        await queries.create_invited_user(conn, "invited", "invited@example.com", "Customer")
    answers = {}
    for n, email in enumerate((waiting["email"], "done@example.com", gone["email"], "invited@example.com",
                               "nobody@example.com")):
        response = await resend(app.test_client(), email, ip=f"203.0.113.{n + 1}")
        answers[email] = (response.status_code, sorted(response.headers.keys()), normalised(await text(response)))
    assert len(set(map(repr, answers.values()))) == 1, "one answer for all"
    status, _, html = answers["nobody@example.com"]
    assert status == 200 and SENT in html
    assert [m.recipient for m in await rows(db, select(outbox))] == [waiting["email"]]


async def test_the_resend_form_by_htmx_answers_its_own_block(app, db, make_user):
    waiting = await unconfirmed(db, make_user, username="waiting")
    response = await resend(app.test_client(), waiting["email"].upper(), headers=htmx("confirm-resend"))
    html = await text(response)
    assert html.lstrip().startswith('<div id="confirm-resend">') and SENT in html
    assert len(await mail_to(db, waiting["email"], "confirm")) == 1, "any case of the address"


async def test_the_resend_form_refuses_a_malformed_address_next_to_its_field(client, db):
    response = await resend(client, "not-an-address")
    html = await text(response)
    assert response.status_code == 422
    assert "@-sign" in element_text(html, "confirm-resend-email-error")
    assert 'aria-describedby="confirm-resend-email-error"' in html
    assert await rows(db, select(login_throttle)) == []


async def test_the_resend_form_is_limited_per_client_address_whatever_is_typed(app, db, make_user):
    waiting = await unconfirmed(db, make_user, username="waiting")
    client = app.test_client()
    for n in range(confirmation.ASKS_PER_CLIENT):
        assert (await resend(client, f"nobody{n}@example.com")).status_code == 200
    for email in (waiting["email"], "nobody@example.com"):
        response = await resend(client, email)
        assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
        assert confirmation.ASKS_LIMITED in await text(response)
    assert await mail_to(db, waiting["email"], "confirm") == []
    assert (await resend(client, waiting["email"], ip="203.0.113.9")).status_code == 200, "another network"


async def test_the_resend_form_sends_an_account_at_most_its_links_without_saying_so(app, db, make_user):
    waiting = await unconfirmed(db, make_user, username="waiting")
    answers = set()
    for n in range(confirmation.LINKS_PER_ACCOUNT + 2):
        response = await resend(app.test_client(), waiting["email"], ip=f"203.0.113.{n + 1}")
        answers.add((response.status_code, normalised(await text(response))))
    assert len(answers) == 1
    assert len(await mail_to(db, waiting["email"], "confirm")) == confirmation.LINKS_PER_ACCOUNT


async def test_the_resend_page_works_without_javascript(client):
    html = await text(await client.get("/confirm-email/resend"))
    assert 'method="post" action="/confirm-email/resend"' in html
    assert '<label for="confirm-resend-email">' in html


# ---- REQUIRE_EMAIL_CONFIRMATION=1 --------------------------------------------------------

async def test_required_registration_mails_the_link_and_does_not_log_in(strict_app, db):
    client = strict_app.test_client()
    response = await register(client)
    assert response.status_code == 303 and location(response) == "/confirm-email/sent"
    account = await user_named(db, "newcomer")
    assert await session_rows(db, account.id) == []
    assert len(await mail_to(db, "newcomer@example.com", "confirm")) == 1
    html = await text(await client.get("/confirm-email/sent"))
    assert "Check your email" in html and 'action="/confirm-email/resend"' in html
    assert (await client.get("/dashboard")).status_code == 302


async def test_required_a_right_password_for_an_unconfirmed_account_says_why_and_offers_the_link(strict_app, db, make_user):
    alice = await unconfirmed(db, make_user, username="alice")
    client = strict_app.test_client()
    response = await login(client, alice["email"])
    html = await text(response)
    assert response.status_code == 403
    assert element_text(html, "login-form-error") == UNCONFIRMED
    assert f'value="{alice["email"]}"' in html and 'action="/confirm-email/resend"' in html
    assert await session_rows(db, alice["id"]) == []
    throttled = await rows(db, select(login_throttle).where(login_throttle.c.failures > 0))
    assert throttled == [], "the owner's right password is no failure"


async def test_required_a_wrong_password_says_only_that_it_is_wrong(strict_app, db, make_user):
    await unconfirmed(db, make_user, username="alice")
    response = await login(strict_app.test_client(), "alice", "not the password at all")
    html = await text(response)
    assert response.status_code == 401 and UNCONFIRMED not in html and "confirm-resend" not in html


async def test_required_the_refusal_by_htmx_brings_the_resend_form_out_of_band(strict_app, db, make_user):
    await unconfirmed(db, make_user, username="alice")
    response = await login(strict_app.test_client(), "alice", headers=htmx("login-form"))
    html = await text(response)
    assert response.status_code == 403
    assert '<div id="login-unconfirmed" hx-swap-oob="true">' in html
    assert 'hx-post="/confirm-email/resend"' in html and 'value=""' in html  # a username: no address to fill


async def test_required_a_confirmed_address_logs_in(mailed, strict_app, db, make_user):
    alice = await unconfirmed(db, make_user, username="alice")
    client = strict_app.test_client()
    assert (await post(client, await send_link(strict_app, mailed, alice))).status_code == 303
    response = await login(client, "alice")
    assert response.status_code == 303 and location(response) == "/dashboard"


async def test_required_invitations_are_not_concerned(strict_app, db):
    """An invitee confirms by accepting; before that, no password opens the account at all."""
    async with db.write() as conn:
        await queries.create_invited_user(conn, "invitee", "invitee@example.com", "Customer")
    response = await login(strict_app.test_client(), "invitee")
    assert response.status_code == 401 and UNCONFIRMED not in await text(response)


# ---- over HTTP: the real server, the real SMTP server ------------------------------------

async def test_confirming_over_http_with_the_message_sent_once(mail_server, db):
    address = mailbox_address("confirm")
    async with httpx.AsyncClient(base_url=mail_server.url, timeout=30) as http:
        registered = await posted(http, "/register", {**NEWCOMER, "username": "http.confirm", "email": address})
        assert registered.status_code == 303 and registered.headers["Location"] == "/dashboard"
        message = await mail_server.mailbox.next_to(address)
        assert message["Subject"] == "Confirm your email address · Gatehouse"
        url = mailed_url(message, "confirm-email")
        assert url.startswith(mail_server.url + "/confirm-email/")
        row = await sent_once(db, address, "confirm")
        assert row.attempts == 1 and url.rsplit("/", 1)[1] not in row.text_body  # blanked once sent
        path = url.removeprefix(mail_server.url)
        assert BANNER in (await http.get("/dashboard")).text
        done = await posted(http, path, {})
        assert done.status_code == 303 and done.headers["Location"] == "/dashboard"
        assert BANNER not in (await http.get("/dashboard")).text
        assert (await http.get(path)).status_code == 410
    assert (await user_named(db, "http.confirm")).email_confirmed_at is not None
    assert len(mail_server.mailbox.to(address)) == 1
