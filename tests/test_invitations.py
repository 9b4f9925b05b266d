"""Invitations replace generated passwords: creating a user in the table mails them a link
(web/users/routes.py create, web/accounts/invitation.py), the table shows and handles pending
invitations (web/users/invitations.py), the invitee chooses a password at the link and is
signed in. In-process against the outbox table, then over HTTP against the real server and
SMTP server (PostgreSQL: two workers)."""
import asyncio
import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from conftest import PASSWORD, csrf_from, make_config
from helpers import (
    audit_rows, element_text, htmx, location, login, login_ok, mail_to, mailbox_address, mailed_url, normalised,
    page, page_and_statements, posted, posted_at_once, rows, send, sent_once, signed_in, text, toasts, user_named,
    user_row,
)
import loopback_smtp
from web import create_app
from web.accounts import passwords, queries, tokens
from web.accounts.auth import LOGIN_FAILED
from web.core.db import utcnow
from web.core.tables import account_tokens, users
from web.users.invitations import RESENDS_PER_HOUR
from web.users.edits import LAST_ADMIN

NEW_PASSWORD = "lantern quarry velvet orbit"
INVALID = "This invitation is invalid or has expired"
INVITE_LINK = re.compile(r"http://[^\s\"<>]+/invitation/([A-Za-z0-9_-]+)")


# ---- helpers ---------------------------------------------------------------------------

async def invite(client, username="newbie", email=None, role="Customer", **kwargs):
    """Create a user in the table (the inline row, with htmx) and return the answer."""
    form = {"username": username, "email": email or f"{username}@example.com", "role": role, "back": "/users"}
    return await send(client, "/users", form, target="user-new", **kwargs)


async def link_token(db, address: str, nth: int = -1) -> str:
    """The token of the `nth` invitation mailed to `address` (the outbox keeps it until sent)."""
    messages = await mail_to(db, address, "invite")
    assert messages, f"no invitation to {address}"
    return INVITE_LINK.search(messages[nth].text_body).group(1)


async def invited(client, db, username="newbie", role="Customer") -> tuple[object, str]:
    """A user invited through the table: their row and the token of their link."""
    response = await invite(client, username, role=role)
    assert response.status_code == 200, await text(response)
    return await user_named(db, username), await link_token(db, f"{username}@example.com")


async def accept(client, token: str, password: str = NEW_PASSWORD, confirm: str | None = None, **kwargs):
    """Submit the invitation's form, with the CSRF token of its page."""
    csrf = csrf_from(await text(await client.get("/login")))
    form = {"password": password, "password_confirm": password if confirm is None else confirm, "csrf_token": csrf}
    return await client.post(f"/invitation/{token}", form=form, **kwargs)


async def expire(db, user_id: int) -> None:
    """As if INVITATION_DAYS had passed: the invitation's expiry moved into the past."""
    async with db.write() as conn:
        await conn.execute(update(account_tokens).where(account_tokens.c.user_id == user_id)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))


async def assert_invalid(client, token: str) -> str:
    """The link's page and its form both answer the one "invalid or expired" page; its body."""
    bodies = set()
    for response in (await client.get(f"/invitation/{token}"), await accept(client, token)):
        body = await text(response)
        assert response.status_code == 410, body[:300]
        assert INVALID in body and "Ask the person who invited you for a new one" in body
        assert response.headers["Cache-Control"] == "no-store"
        bodies.add(normalised(body))
    return bodies.pop()


def status_cell(html: str, user_id: int) -> str:
    row = re.search(rf'<tr id="user-{user_id}".*?</tr>', html, re.S).group(0)
    cell = re.search(r'<td class="col-status">(.*?)</td>', row, re.S).group(1)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", cell)).strip()


# ---- creating sends an invitation ------------------------------------------------------

async def test_creating_a_user_mails_an_invitation_and_sets_no_password(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin", username="ada.admin")
    response = await invite(client, "newbie", role="Manager")
    assert response.status_code == 200, await text(response)
    assert toasts(response, "success")[0]["text"] == "Invited newbie: we sent a link to newbie@example.com."
    created = await user_named(db, "newbie")
    assert created.password_hash == passwords.UNUSABLE and passwords.unusable(created.password_hash)
    assert created.invited_at is not None and created.email_confirmed_at is None
    [message] = await mail_to(db, "newbie@example.com", "invite")
    assert message.subject == "You are invited to Gatehouse · Gatehouse"
    token = INVITE_LINK.search(message.text_body).group(1)
    assert f"http://localhost:8000/invitation/{token}" in message.text_body
    assert f'href="http://localhost:8000/invitation/{token}"' in message.html_body
    assert "ada.admin invited you to Gatehouse as Manager" in message.text_body
    assert message.secrets == [token]  # blanked from the stored copy once sent
    [stored] = await rows(db, select(account_tokens))
    assert (stored.user_id, stored.purpose, stored.id, stored.email) == (
        created.id, "invite", tokens.digest(token), "newbie@example.com")
    assert stored.expires_at - stored.created_at == timedelta(days=7)
    expires = stored.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    assert f"until {expires}" in message.text_body and f"until {expires}" in message.html_body
    [event] = await audit_rows(db, "create")
    assert event.actor_id == me["id"] and event.changes["invited"] == [None, True]


async def test_the_create_row_asks_for_no_password(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    for body in (await page(client, "/users/new", **htmx("users-rows")), await page(client, "/users/new")):
        row = re.search(r'<tr id="user-new".*?</tr>', body, re.S).group(0)
        assert 'type="password"' not in row and "They get an email with a link" in row


async def test_invitation_days_sets_how_long_the_link_works(db, database_url, make_user):
    app = create_app(make_config(database_url, invitation_days=3))
    try:
        _, client = await signed_in(app, make_user, "Admin")
        await invite(client, "shortlived")
        [stored] = await rows(db, select(account_tokens))
        assert stored.expires_at - stored.created_at == timedelta(days=3)
    finally:
        await app.db.dispose()


async def test_managers_invite_customers_only(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    manager_row, _ = await invited(admin, db, "invited.manager", role="Manager")
    _, client = await signed_in(app, make_user, "Manager")
    response = await invite(client, "wants.admin", role="Admin")
    assert response.status_code == 200
    assert (await user_named(db, "wants.admin")).role == "Customer"
    for action in ("resend", "revoke"):
        response = await send(client, f"/users/{manager_row.id}/invitation/{action}", target="users-table")
        assert response.status_code == 403, action
    assert len(await mail_to(db, "invited.manager@example.com", "invite")) == 1
    assert (await user_row(db, manager_row.id)).deleted_at is None


# ---- the invitee's page ----------------------------------------------------------------

async def test_opening_the_link_shows_a_form_and_uses_nothing(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    _, token = await invited(admin, db, "newbie", role="Manager")
    client = app.test_client()
    for _ in range(2):  # a mail scanner opened it first: the invitee still can
        response = await client.get(f"/invitation/{token}")
        body = await text(response)
        assert response.status_code == 200
        assert "Welcome newbie" in body and "You were invited as <strong>Manager</strong>" in body
        assert f'action="/invitation/{token}"' in body and 'autocomplete="new-password"' in body
        assert response.headers["Cache-Control"] == "no-store"
    assert len(await rows(db, select(account_tokens))) == 1


async def test_accepting_sets_the_password_confirms_the_address_and_signs_in(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    row, token = await invited(admin, db)
    client = app.test_client()
    response = await accept(client, token)
    assert response.status_code == 303 and location(response) == "/dashboard"
    after = await user_row(db, row.id)
    assert after.invited_at is None and after.email_confirmed_at is not None and after.last_login_at is not None
    assert (await passwords.verify(NEW_PASSWORD, after.password_hash))[0]
    dashboard = await page(client, "/dashboard")
    assert "Welcome to Gatehouse, newbie" in dashboard and "Signed in as <strong>newbie</strong>" in dashboard
    [event] = await audit_rows(db, "invite_accepted")
    assert (event.actor_id, event.target_id, event.changes) == (row.id, row.id, {"invited": [True, False]})
    assert await rows(db, select(account_tokens)) == []
    await assert_invalid(app.test_client(), token)  # used up
    await login_ok(app.test_client(), "newbie", password=NEW_PASSWORD)


async def test_accepting_with_htmx_goes_to_the_dashboard(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    _, token = await invited(admin, db)
    response = await accept(app.test_client(), token, headers=htmx("invitation-form"))
    assert response.status_code == 200 and response.headers["HX-Location"] == "/dashboard"


@pytest.mark.parametrize("password, confirm, field, says", [
    ("short words", None, "password", "at least 15 characters"),
    ("newbie plus other words", None, "password", "username"),
    ("correct horse battery staple", None, "password", "well-known phrase"),
    (NEW_PASSWORD, "lantern quarry velvet orb", "password-confirm", "differ"),
])
async def test_accepting_applies_the_password_policy_next_to_the_field(app, db, make_user, password, confirm,
                                                                      field, says):
    _, admin = await signed_in(app, make_user, "Admin")
    row, token = await invited(admin, db)
    for headers in ({}, htmx("invitation-form")):
        response = await accept(app.test_client(), token, password, confirm, headers=headers)
        body = await text(response)
        assert response.status_code == 422, body[:300]
        assert says in element_text(body, f"invitation-{field}-error")
        assert f'id="invitation-{field}"' in body and 'aria-invalid="true"' in body
        assert ("<html" in body) == (not headers)
    assert (await user_row(db, row.id)).password_hash == passwords.UNUSABLE
    assert len(await rows(db, select(account_tokens))) == 1
    assert await audit_rows(db, "invite_accepted") == []


async def test_every_link_that_opens_nothing_answers_the_same_page(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    expired_row, expired = await invited(admin, db, "expired.one")
    await expire(db, expired_row.id)
    _, used = await invited(admin, db, "used.one")
    assert (await accept(app.test_client(), used)).status_code == 303
    client = app.test_client()
    bodies = {await assert_invalid(client, token) for token in (expired, used, "not-a-token", "x" * 500)}
    assert len(bodies) == 1
    assert (await user_row(db, expired_row.id)).password_hash == passwords.UNUSABLE


async def test_an_expired_link_cannot_be_accepted_but_a_resent_one_can(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    row, old = await invited(admin, db)
    await expire(db, row.id)
    assert "Invitation expired" in status_cell(await page(admin, "/users"), row.id)
    response = await send(admin, f"/users/{row.id}/invitation/resend", target="users-table")
    assert response.status_code == 204
    new = await link_token(db, "newbie@example.com")
    await assert_invalid(app.test_client(), old)
    assert (await accept(app.test_client(), new)).status_code == 303


async def test_two_accepts_of_one_link_at_once_exactly_one_wins(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    row, token = await invited(admin, db)
    clients = [app.test_client() for _ in range(2)]
    forms = []
    for n, client in enumerate(clients):
        csrf = csrf_from(await text(await client.get(f"/invitation/{token}")))
        forms.append({"password": f"{NEW_PASSWORD} {n}", "password_confirm": f"{NEW_PASSWORD} {n}", "csrf_token": csrf})
    answers = await asyncio.gather(*(c.post(f"/invitation/{token}", form=f) for c, f in zip(clients, forms)))
    assert sorted(a.status_code for a in answers) == [303, 410]
    winner = next(n for n, a in enumerate(answers) if a.status_code == 303)
    assert (await passwords.verify(f"{NEW_PASSWORD} {winner}", (await user_row(db, row.id)).password_hash))[0]
    assert len(await audit_rows(db, "invite_accepted")) == 1
    assert len(await rows(db, select(users.c.id).where(users.c.invited_at.is_not(None)))) == 0


async def test_a_deactivated_invitee_cannot_accept(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    row, token = await invited(admin, db)
    async with db.write() as conn:
        await queries.update_user(conn, row.id, {"active": False})
    await assert_invalid(app.test_client(), token)
    assert (await user_row(db, row.id)).password_hash == passwords.UNUSABLE


# ---- an invited account cannot log in --------------------------------------------------

async def test_an_invited_account_cannot_log_in_and_is_told_as_for_a_wrong_password(app, db, make_user,
                                                                                    monkeypatch):
    _, admin = await signed_in(app, make_user, "Admin")
    await invited(admin, db, "invitee")
    await make_user("Customer", username="known")
    checks = []
    real = passwords.hasher.verify_and_update
    monkeypatch.setattr(passwords.hasher, "verify_and_update",
                        lambda password, stored: checks.append(stored) or real(password, stored))
    answers = {}
    for identifier, password in (("invitee", PASSWORD), ("invitee", passwords.UNUSABLE), ("known", "wrong password here")):
        checks.clear()
        response = await login(app.test_client(), identifier, password, ip="192.0.2.9")
        body = await text(response)
        answers[(identifier, password)] = (response.status_code, element_text(body, "login-form-error"))
        # One real argon2 check each: the invitee's is spent on the dummy hash, as for an unknown name.
        assert len(checks) == 1 and checks[0].startswith("$argon2")
        assert (checks[0] == passwords.dummy_hash()) == (identifier == "invitee")
    assert set(answers.values()) == {(401, LOGIN_FAILED)}
    assert len(await audit_rows(db, "login_failed")) == 3
    assert (await user_named(db, "invitee")).last_login_at is None


# ---- the users table -------------------------------------------------------------------

async def test_the_table_shows_invited_and_expired_and_filters_by_them(app, db, make_user):
    me, admin = await signed_in(app, make_user, "Admin")
    pending, _ = await invited(admin, db, "pending.one")
    lapsed, _ = await invited(admin, db, "lapsed.one")
    await expire(db, lapsed.id)
    active = await make_user("Customer", username="active.one")
    inactive = await make_user("Customer", username="inactive.one", active=False)
    html, statements = await page_and_statements(app, admin, "/users")
    assert status_cell(html, pending.id) == "Invited"
    assert status_cell(html, lapsed.id) == "Invitation expired"
    assert status_cell(html, active["id"]) == "Yes" and status_cell(html, inactive["id"]) == "No"
    # The invitations are read within the page's one query, not one query per row.
    assert sum("account_tokens" in statement for statement, _ in statements) == 1
    row = re.search(rf'<tr id="user-{pending.id}".*?</tr>', html, re.S).group(0)
    assert f'action="/users/{pending.id}/invitation/resend"' in row
    assert f'action="/users/{pending.id}/invitation/revoke"' in row
    assert "invitation/" not in re.search(rf'<tr id="user-{active["id"]}".*?</tr>', html, re.S).group(0)
    shown = {}
    for status in ("invited", "expired", "1", "0"):
        body = await page(admin, f"/users?active={status}")
        shown[status] = set(re.findall(r'data-username="([^"]+)"', body))
        assert f'<option value="{status}" selected>' in body
    assert shown == {"invited": {"pending.one", "lapsed.one"}, "expired": {"lapsed.one"},
                     "1": {"active.one", me["username"]}, "0": {"inactive.one"}}


async def test_a_row_shows_the_invitation_after_a_save(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    row, _ = await invited(admin, db)
    form = {"version": str(row.version), "username": "renamed", "email": row.email, "role": row.role,
            "active": "1", "back": "/users"}
    response = await send(admin, f"/users/{row.id}", form, target=f"user-{row.id}")
    assert response.status_code == 200
    assert status_cell(await text(response), row.id) == "Invited"
    assert len(await mail_to(db, row.email, "invite")) == 1  # the same address: no new mail


async def test_resending_mails_a_new_link_and_the_old_one_dies(app, db, make_user):
    me, admin = await signed_in(app, make_user, "Admin")
    row, old = await invited(admin, db)
    response = await send(admin, f"/users/{row.id}/invitation/resend", target="users-table")
    assert response.status_code == 204
    assert "users-changed" in response.headers["HX-Trigger"]
    assert toasts(response, "success")[0]["text"].startswith("Invited newbie again: we sent a new link to newbie@example.com")
    assert len(await mail_to(db, "newbie@example.com", "invite")) == 2
    new = await link_token(db, "newbie@example.com")
    assert new != old
    await assert_invalid(app.test_client(), old)
    assert (await app.test_client().get(f"/invitation/{new}")).status_code == 200
    [event] = await audit_rows(db, "invite_resent")
    assert (event.actor_id, event.target_id, event.changes) == (me["id"], row.id, {"sent_to": [None, "newbie@example.com"]})


async def test_resends_are_limited_per_invitation(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    row, _ = await invited(admin, db)
    other, _ = await invited(admin, db, "other.one")
    for _ in range(RESENDS_PER_HOUR):
        assert (await send(admin, f"/users/{row.id}/invitation/resend", target="users-table")).status_code == 204
    refused = await send(admin, f"/users/{row.id}/invitation/resend", target="users-table")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "invited 3 times this hour" in toasts(refused, "error")[0]["text"]
    assert len(await mail_to(db, "newbie@example.com", "invite")) == 1 + RESENDS_PER_HOUR
    assert (await send(admin, f"/users/{other.id}/invitation/resend", target="users-table")).status_code == 204


async def test_a_plain_resend_goes_back_to_the_table(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    row, _ = await invited(admin, db)
    response = await send(admin, f"/users/{row.id}/invitation/resend", {"back": "/users?active=invited"}, hx=False)
    assert response.status_code == 303 and location(response) == "/users?active=invited"


async def test_revoking_deletes_the_account_and_kills_the_link_with_an_undo(app, db, make_user):
    me, admin = await signed_in(app, make_user, "Admin")
    row, token = await invited(admin, db)
    response = await send(admin, f"/users/{row.id}/invitation/revoke", target="users-table")
    assert response.status_code == 204
    [message] = toasts(response, "success")
    assert message["text"] == "Revoked the invitation of newbie." and message["undo"] == f"/users/{row.id}/restore?back=%2Fusers"
    assert (await user_row(db, row.id)).deleted_at is not None
    assert await rows(db, select(account_tokens)) == []
    await assert_invalid(app.test_client(), token)
    [event] = await audit_rows(db, "invite_revoked")
    assert (event.actor_id, event.target_id, event.changes) == (me["id"], row.id, {"deleted": [False, True]})
    assert 'data-username="newbie"' not in await page(admin, "/users")
    # Undo brings the account back, its link still dead: it can be invited again.
    assert (await send(admin, f"/users/{row.id}/restore", target="users-table")).status_code == 204
    assert status_cell(await page(admin, "/users"), row.id) == "Invitation expired"
    await assert_invalid(app.test_client(), token)


async def test_an_accepted_invitation_cannot_be_resent_or_revoked(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    row, token = await invited(admin, db)
    await accept(app.test_client(), token)
    for action in ("resend", "revoke"):
        response = await send(admin, f"/users/{row.id}/invitation/{action}", target="users-table")
        assert response.status_code == 409
        assert "already accepted" in toasts(response, "error")[0]["text"]
    assert (await user_row(db, row.id)).deleted_at is None


async def test_a_deactivated_invitee_is_not_invited_again(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    row, _ = await invited(admin, db)
    async with db.write() as conn:
        await queries.update_user(conn, row.id, {"active": False})
    response = await send(admin, f"/users/{row.id}/invitation/resend", target="users-table")
    assert response.status_code == 409 and "activate them" in toasts(response, "error")[0]["text"]
    assert len(await mail_to(db, "newbie@example.com", "invite")) == 1


async def test_a_new_address_for_an_invitee_gets_the_invitation_and_the_old_link_dies(app, db, make_user):
    me, admin = await signed_in(app, make_user, "Admin")
    row, old = await invited(admin, db)
    form = {"version": str(row.version), "username": row.username, "email": "right@example.com",
            "role": row.role, "active": "1", "back": "/users"}
    response = await send(admin, f"/users/{row.id}", form, target=f"user-{row.id}")
    assert response.status_code == 200, await text(response)
    new = await link_token(db, "right@example.com")
    await assert_invalid(app.test_client(), old)
    response = await app.test_client().get(f"/invitation/{new}")
    assert response.status_code == 200
    [event] = await audit_rows(db, "invite_resent")
    assert (event.actor_id, event.changes) == (me["id"], {"sent_to": [None, "right@example.com"]})
    assert (await accept(app.test_client(), new)).status_code == 303
    assert (await user_row(db, row.id)).email_confirmed_at is not None


# ---- the last-Admin guard --------------------------------------------------------------

async def test_an_invited_admin_is_no_active_admin_until_they_accept(app, db, make_user):
    me, admin = await signed_in(app, make_user, "Admin")
    invitee, token = await invited(admin, db, "next.admin", role="Admin")
    async with db.write() as conn:
        assert await queries.lock_active_admins(conn) == [me["id"]]
    mine = await user_row(db, me["id"])
    for change, field in (({"role": "Manager"}, "role"), ({"active": False}, "active")):
        form = {"version": str(mine.version), "username": mine.username, "email": mine.email, "role": mine.role,
                "active": "1", "back": "/users", **change}
        if form["active"] is False:
            del form["active"]
        response = await send(admin, f"/users/{me['id']}", form, target=f"user-{me['id']}")
        assert response.status_code == 422
        assert element_text(await text(response), f"edit-{me['id']}-{field}-error") == LAST_ADMIN
    for action in ("role:Customer", "deactivate"):
        response = await send(admin, "/users/bulk", [("action", action), ("ids", str(me["id"])),
                                                      ("ids", str(invitee.id)), ("back", "/users")],
                              target="bulk-form")
        assert response.status_code == 409 and LAST_ADMIN in toasts(response, "error")[0]["text"]
    assert await user_row(db, me["id"]) == mine
    # Once the invitation is accepted, there are two Admins: one may step down.
    assert (await accept(app.test_client(), token)).status_code == 303
    response = await send(admin, "/users/bulk", [("action", "role:Manager"), ("ids", str(me["id"])), ("back", "/users")],
                          target="bulk-form")
    assert response.status_code == 200
    assert (await user_row(db, me["id"])).role == "Manager"


async def test_the_last_admin_cannot_be_deleted_while_only_an_invited_admin_remains(app, db, make_user):
    """A single request cannot delete the last Admin (the only one left is the one asking, and
    deleting oneself is refused first), so this asks the guard itself, as delete does."""
    me, admin = await signed_in(app, make_user, "Admin")
    await invited(admin, db, "next.admin", role="Admin")
    async with db.write() as conn:
        admins = await queries.lock_active_admins(conn)
    assert admins == [me["id"]]  # delete refuses when admins == [the one deleted]
    response = await send(admin, f"/users/{me['id']}/delete", {"back": "/users"}, target=f"user-{me['id']}")
    assert response.status_code == 409


# ---- over HTTP, with the real SMTP server ----------------------------------------------

async def test_the_invitation_flow_over_http_with_the_message_sent_once(mail_server, db, make_user):
    admin = await make_user("Admin", username="http.admin")
    address = mailbox_address("invitee")
    async with httpx.AsyncClient(base_url=mail_server.url, timeout=30) as http:
        signed = await posted(http, "/login", {"identifier": admin["username"], "password": PASSWORD})
        assert signed.status_code == 303
        created = await posted(http, "/users", {"username": "http.invitee", "email": address, "role": "Manager",
                                                "back": "/users"}, page="/users")
        assert created.status_code == 303, created.text[:300]
    message = await mail_server.mailbox.next_to(address)
    assert message["Subject"] == "You are invited to Gatehouse · Gatehouse"
    assert "http.admin invited you to Gatehouse as Manager" in loopback_smtp.parts(message)["text/plain"]
    url = mailed_url(message, "invitation")
    assert url.startswith(mail_server.url + "/invitation/")
    row = await sent_once(db, address, "invite")
    assert row.attempts == 1 and url.rsplit("/", 1)[1] not in row.text_body  # blanked once sent
    path = url.removeprefix(mail_server.url)
    async with httpx.AsyncClient(base_url=mail_server.url, timeout=30) as invitee:
        assert "Welcome http.invitee" in (await invitee.get(path)).text
        done = await posted(invitee, path, {"password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD})
        assert done.status_code == 303 and done.headers["Location"] == "/dashboard"
        dashboard = await invitee.get("/dashboard")
        assert dashboard.status_code == 200 and "Signed in as <strong>http.invitee</strong>" in dashboard.text
        assert (await invitee.get(path)).status_code == 410
    assert len(mail_server.mailbox.to(address)) == 1


async def test_two_accepts_of_one_link_at_once_over_http_exactly_one_wins(mail_server, db, make_user):
    admin = await make_user("Admin", username="race.admin")
    address = mailbox_address("race")
    async with httpx.AsyncClient(base_url=mail_server.url, timeout=30) as http:
        assert (await posted(http, "/login", {"identifier": admin["username"], "password": PASSWORD})).status_code == 303
        assert (await posted(http, "/users", {"username": "race.invitee", "email": address, "role": "Customer",
                                              "back": "/users"}, page="/users")).status_code == 303
    path = mailed_url(await mail_server.mailbox.next_to(address), "invitation").removeprefix(mail_server.url)
    answers = await posted_at_once(mail_server.url, path, [
        {"password": f"{NEW_PASSWORD} {n}", "password_confirm": f"{NEW_PASSWORD} {n}"} for n in range(2)])
    assert sorted(a.status_code for a in answers) == [303, 410]
    winner = next(n for n, a in enumerate(answers) if a.status_code == 303)
    invitee = await user_named(db, "race.invitee")
    assert (await passwords.verify(f"{NEW_PASSWORD} {winner}", invitee.password_hash))[0]
    assert len(await audit_rows(db, "invite_accepted")) == 1
    row = await sent_once(db, address, "invite")
    assert row.attempts == 1
