"""Security notices (web/accounts/mailing.notice): a changed password (from the profile or a
reset) and a login from a browser the account has not used, each mailed to the account's
address in the transaction of the change: what happened, when, from where, with which
browser, and what to do if it was not them."""
import re

import pytest
from sqlalchemy import select

from conftest import PASSWORD
from helpers import login, open_session, post, rows
from web.accounts import queries, tokens
from web.core.tables import outbox

NEW_PASSWORD = "lantern quarry velvet orbit"
WHEN = re.compile(r"When: \d{4}-\d\d-\d\d \d\d:\d\d UTC")
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) NoticeTest/1.0"


async def notices(db, kind: str | None = None):
    query = select(outbox).order_by(outbox.c.id)
    if kind:
        query = query.where(outbox.c.kind == kind)
    return await rows(db, query)


def from_where(ip: str, browser: str = BROWSER) -> dict:
    return {"scope_base": {"client": (ip, 50000)}, "headers": {"User-Agent": browser}}


def told(message, kind: str, to: str, subject: str, ip: str) -> str:
    """A notice of `kind` to `to`: when, from where and with which browser it happened, and what
    to do if it was not them (assert_tells_what_to_do); its text."""
    assert (message.kind, message.recipient) == (kind, to)
    assert message.subject == f"{subject} · Gatehouse"
    text = message.text_body
    assert WHEN.search(text) and f"From the address: {ip}" in text and f"Browser: {BROWSER}" in text
    assert_tells_what_to_do(message)
    return text


def assert_tells_what_to_do(message) -> None:
    """Plain, with the product's name, a way to act and nothing remote or tracked."""
    for body in (message.text_body, message.html_body):
        assert "Gatehouse" in body and "http://localhost:8000/forgot-password" in body
    assert "If it was not you" in message.text_body
    assert '<a href="http://localhost:8000/forgot-password"' in message.html_body
    assert "<img" not in message.html_body and "<script" not in message.html_body
    assert message.secrets is None  # nothing in it opens anything


async def change_password(app, user: dict, current: str = PASSWORD, **kwargs):
    client = app.test_client()
    await open_session(app, client, user["id"])
    await open_session(app, app.test_client(), user["id"])  # another session, ended by the change
    return await post(client, "/profile/password", {"current_password": current, "password": NEW_PASSWORD,
                                                    "password_confirm": NEW_PASSWORD}, **kwargs)


# ---- password changed ------------------------------------------------------------------

async def test_a_password_change_on_the_profile_is_told_to_the_accounts_address(app, db, make_user):
    alice = await make_user(username="alice")
    assert (await change_password(app, alice, **from_where("192.0.2.33"))).status_code == 200
    [message] = await notices(db)
    text = told(message, "password_changed", alice["email"], "Your password was changed", "192.0.2.33")
    assert 'account "alice" was changed on its profile page' in text
    assert "Every other session of the account was ended." in text
    assert "192.0.2.33" in message.html_body and "NoticeTest/1.0" in message.html_body


async def test_a_refused_password_change_tells_nothing(app, db, make_user):
    alice = await make_user(username="alice")
    assert (await change_password(app, alice, current="not the current password")).status_code == 422
    assert await notices(db) == []


async def test_a_reset_is_told_to_the_accounts_address(client, db, make_user):
    alice = await make_user(username="alice")
    async with db.write() as conn:
        token = await tokens.issue(conn, await queries.get_user(conn, alice["id"]), tokens.RESET)
    response = await post(client, f"/reset-password/{token}", {"password": NEW_PASSWORD,
                                                               "password_confirm": NEW_PASSWORD},
                          **from_where("192.0.2.44"))
    assert response.status_code == 303
    [message] = await notices(db, "password_changed")
    text = told(message, "password_changed", alice["email"], "Your password was changed", "192.0.2.44")
    assert 'account "alice" was changed with a reset link sent to this address' in text
    assert "Every session of the account was ended." in text
    assert "can read your email" in text


# ---- a login from a new browser --------------------------------------------------------

async def test_the_first_login_of_an_account_tells_nothing(client, db, make_user):
    await make_user(username="alice")
    assert (await login(client, "alice")).status_code == 303
    assert await notices(db) == []


async def test_a_login_from_a_new_browser_is_told_once(app, db, make_user):
    alice = await make_user(username="alice")
    known, new = app.test_client(), app.test_client()
    assert (await login(known, "alice")).status_code == 303
    assert (await login(new, "alice", headers={"User-Agent": BROWSER}, ip="198.51.100.9")).status_code == 303
    [message] = await notices(db)
    text = told(message, "new_login", alice["email"], "New login to your account", "198.51.100.9")
    assert 'account "alice" from a browser that had not' in text
    assert "someone has your password" in text
    # Both browsers are known now: their next logins tell nothing.
    for client in (known, new, known):
        await post(client, "/logout", {})
        assert (await login(client, "alice")).status_code == 303
    assert len(await notices(db)) == 1


async def test_a_browser_known_to_another_account_is_new_to_this_one(app, db, make_user):
    await make_user(username="alice")
    await make_user(username="bob")
    shared = app.test_client()
    assert (await login(app.test_client(), "alice")).status_code == 303
    assert (await login(shared, "bob")).status_code == 303
    await post(shared, "/logout", {})
    assert (await login(shared, "alice")).status_code == 303
    assert [(m.kind, m.recipient) for m in await notices(db)] == [("new_login", "alice@example.com")]


async def test_a_failed_login_from_a_new_browser_tells_nothing(app, db, make_user):
    await make_user(username="alice")
    assert (await login(app.test_client(), "alice")).status_code == 303
    assert (await login(app.test_client(), "alice", "not the right password")).status_code == 401
    assert await notices(db) == []


@pytest.mark.parametrize("headers, says", [({"User-Agent": ""}, "Browser: an unknown browser"),
                                            ({"User-Agent": "x" * 500}, "Browser: " + "x" * 120 + "\n")])
async def test_the_browser_is_named_as_sent_and_kept_short(app, db, make_user, headers, says):
    await make_user(username="alice")
    assert (await login(app.test_client(), "alice")).status_code == 303
    assert (await login(app.test_client(), "alice", headers=headers)).status_code == 303
    [message] = await notices(db)
    assert says in message.text_body
