"""Sessions after login: listing and ending them, password and email changes, account changes
that take effect at the next request, expiry, and caching."""
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from conftest import PASSWORD
from helpers import (
    AUTH_COOKIE, audit_rows, element_html, element_text, htmx, input_value, is_login_redirect, login_ok,
    mail_to, mailed_path, open_session, post, rows, session_rows, set_cookie_line, text, user_row,
)
from web.accounts import passwords
from web.core.db import utcnow
from web.core.tables import account_tokens, outbox, sessions, users

NEW_PASSWORD = "a brand new passphrase for the tests"


def session_table_rows(html: str) -> list[str]:
    table = element_html(html, "profile-sessions")
    return re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1], re.S)


def ended_form_sid(row_html: str) -> str:
    match = re.search(r'action="/profile/sessions/([^/"]+)/end"', row_html)
    assert match, row_html
    return match.group(1)


# ---- listing and ending sessions -------------------------------------------------------

async def test_profile_lists_each_session_with_its_device(app, make_user):
    await make_user(username="alice")
    laptop, phone = app.test_client(), app.test_client()
    await login_ok(laptop, "alice", headers={"User-Agent": "Laptop Firefox"})
    await login_ok(phone, "alice", headers={"User-Agent": "Phone Safari"})

    html = await text(await laptop.get("/profile"))
    rows = session_table_rows(html)
    assert len(rows) == 2
    (mine,) = [r for r in rows if "Laptop Firefox" in r]
    (other,) = [r for r in rows if "Phone Safari" in r]
    assert "This device" in mine and "End this session" not in mine
    assert "This device" not in other and "End this session" in other


async def test_ending_another_session_signs_that_device_out(app, db, make_user):
    alice = await make_user(username="alice")
    laptop, phone = app.test_client(), app.test_client()
    await open_session(app, laptop, alice["id"], user_agent="Laptop Firefox")
    await open_session(app, phone, alice["id"], user_agent="Phone Safari")
    assert (await phone.get("/dashboard")).status_code == 200

    rows = session_table_rows(await text(await laptop.get("/profile")))
    (other,) = [r for r in rows if "Phone Safari" in r]
    response = await post(laptop, f"/profile/sessions/{ended_form_sid(other)}/end")

    assert response.status_code == 200
    assert "Phone Safari" not in await text(response)
    assert len(await session_rows(db, alice["id"])) == 1
    assert is_login_redirect(await phone.get("/dashboard"))
    assert (await laptop.get("/dashboard")).status_code == 200
    assert len(await audit_rows(db, "session_end")) == 1


async def test_end_all_other_sessions_keeps_only_this_one(app, db, make_user):
    alice = await make_user(username="alice")
    mine, *others = [app.test_client() for _ in range(3)]
    keep = await open_session(app, mine, alice["id"])
    for other in others:
        await open_session(app, other, alice["id"])

    response = await post(mine, "/profile/sessions/end-others")

    assert response.status_code == 200
    assert "2 other sessions ended." in await text(response)
    assert [row.id for row in await session_rows(db, alice["id"])] == [keep]
    for other in others:
        assert is_login_redirect(await other.get("/dashboard"))
    assert (await mine.get("/dashboard")).status_code == 200


async def test_nobody_can_end_someone_elses_session(app, db, make_user):
    alice, mallory = await make_user(username="alice"), await make_user(username="mallory")
    victim, attacker = app.test_client(), app.test_client()
    sid = await open_session(app, victim, alice["id"])
    await open_session(app, attacker, mallory["id"])

    response = await post(attacker, f"/profile/sessions/{sid}/end")

    assert response.status_code == 200
    assert len(await session_rows(db, alice["id"])) == 1
    assert (await victim.get("/dashboard")).status_code == 200


# ---- changing the password -------------------------------------------------------------

def password_form(current=PASSWORD, new=NEW_PASSWORD, confirm=None):
    return {"current_password": current, "password": new,
            "password_confirm": new if confirm is None else confirm}


@pytest.mark.parametrize("form, field, words", [
    (password_form(current="not my password at all"), "password-current", "not your current password"),
    (password_form(new=PASSWORD), "password-new", "must differ"),
    (password_form(confirm=NEW_PASSWORD + "?"), "password-confirm", "differ"),
    (password_form(new="too short"), "password-new", "at least 15"),
], ids=["wrong-current", "same-as-old", "confirmation-differs", "too-short"])
async def test_a_refused_password_change_says_why_next_to_the_field(app, client, db, make_user,
                                                                    form, field, words):
    alice = await make_user(username="alice")
    await open_session(app, client, alice["id"])
    before = (await user_row(db, alice["id"])).password_hash

    response = await post(client, "/profile/password", form)

    assert response.status_code == 422
    assert words in element_text(await text(response), f"{field}-error")
    assert (await user_row(db, alice["id"])).password_hash == before
    assert await audit_rows(db, "password_change") == []


async def test_changing_the_password_ends_the_other_sessions(app, db, make_user):
    alice = await make_user(username="alice")
    mine, other = app.test_client(), app.test_client()
    await open_session(app, mine, alice["id"])
    await open_session(app, other, alice["id"])

    response = await post(mine, "/profile/password", password_form())

    assert response.status_code == 200
    assert is_login_redirect(await other.get("/dashboard"))
    assert (await mine.get("/dashboard")).status_code == 200
    assert passwords.hasher.verify(NEW_PASSWORD, (await user_row(db, alice["id"])).password_hash)
    (event,) = await audit_rows(db, "password_change")
    assert event.actor_id == alice["id"]
    assert event.changes == {"sessions_ended": [None, 1]}
    assert NEW_PASSWORD not in json.dumps(event.changes)


# ---- account changes take effect at the next request --------------------------------

@pytest.mark.parametrize("change", [
    {"active": False},
    {"deleted_at": "now"},
], ids=["deactivated", "soft-deleted"])
async def test_a_disabled_account_is_signed_out_at_its_next_request(app, client, db, make_user, change):
    alice = await make_user(username="alice")
    await open_session(app, client, alice["id"])
    assert (await client.get("/dashboard")).status_code == 200

    values = {k: (utcnow() if v == "now" else v) for k, v in change.items()}
    async with db.write() as conn:
        await conn.execute(update(users).where(users.c.id == alice["id"]).values(**values))

    response = await client.get("/dashboard")
    assert is_login_redirect(response)
    cookie = set_cookie_line(response, AUTH_COOKIE)
    assert cookie is not None and cookie.startswith(f"{AUTH_COOKIE}=;")  # the stale cookie is dropped


def staff_only_paths(app) -> list[str]:
    """GET routes that let Managers in and Customers not."""
    found = []
    for rule in app.url_map.iter_rules():
        allowed = getattr(app.view_functions[rule.endpoint], "allowed_roles", None)
        if ("GET" in rule.methods and not rule.arguments and allowed
                and "Manager" in allowed and "Customer" not in allowed):
            found.append(rule.rule)
    return found


async def test_a_demoted_manager_loses_staff_rights_at_the_next_request(app, client, db, make_user):
    manager = await make_user(role="Manager", username="molly")
    await open_session(app, client, manager["id"])
    staff_paths = staff_only_paths(app)
    html = await text(await client.get("/dashboard"))
    assert element_text(html, "you-title")  # the dashboard rendered
    assert 'href="/users"' in html and "badge-manager" in html
    for path in staff_paths:
        assert (await client.get(path)).status_code == 200, path

    async with db.write() as conn:
        await conn.execute(update(users).where(users.c.id == manager["id"]).values(role="Customer"))

    html = await text(await client.get("/dashboard"))
    assert 'href="/users"' not in html and "badge-manager" not in html
    assert "badge-customer" in html
    for path in staff_paths:
        assert (await client.get(path)).status_code == 403, path


# ---- expiry ----------------------------------------------------------------------------

async def move_session(db, sid: str, **values) -> None:
    async with db.write() as conn:
        await conn.execute(update(sessions).where(sessions.c.id == sid).values(**values))


async def test_an_idle_session_expires(app, client, db, config, make_user):
    alice = await make_user(username="alice")
    sid = await open_session(app, client, alice["id"])
    await move_session(db, sid, last_seen_at=utcnow() - timedelta(seconds=config.session_idle + 60))
    assert is_login_redirect(await client.get("/dashboard"))


async def test_a_session_in_use_is_kept_alive(app, client, db, config, make_user):
    alice = await make_user(username="alice")
    sid = await open_session(app, client, alice["id"])
    almost_idle = utcnow() - timedelta(seconds=config.session_idle - 120)
    await move_session(db, sid, last_seen_at=almost_idle)
    assert (await client.get("/dashboard")).status_code == 200
    (row,) = await session_rows(db, alice["id"])
    assert row.last_seen_at > almost_idle + timedelta(seconds=60)


async def test_a_remembered_session_survives_a_short_idle_time(app, client, db, config, make_user):
    alice = await make_user(username="alice")
    sid = await open_session(app, client, alice["id"], remember=True)
    await move_session(db, sid, last_seen_at=utcnow() - timedelta(seconds=config.session_idle + 60))
    assert (await client.get("/dashboard")).status_code == 200
    await move_session(db, sid, last_seen_at=utcnow() - timedelta(seconds=config.remember_idle + 60))
    assert is_login_redirect(await client.get("/dashboard"))


async def test_a_session_past_its_absolute_expiry_ends(app, client, db, make_user):
    alice = await make_user(username="alice")
    sid = await open_session(app, client, alice["id"])
    await move_session(db, sid, expires_at=utcnow() - timedelta(seconds=1))
    assert is_login_redirect(await client.get("/dashboard"))


# ---- changing the email address (the whole flow: tests/test_email_change.py) ------------

@pytest.mark.parametrize("form, field, words", [
    ({"email": "new@example.com"}, "profile-email-current", "not your current password"),
    ({"email": "new@example.com", "current_password": "a wrong password here"},
     "profile-email-current", "not your current password"),
    ({"email": "not-an-email", "current_password": PASSWORD}, "profile-email", "@-sign"),
], ids=["no-password", "wrong-password", "invalid"])
async def test_a_refused_email_change_says_why_and_changes_nothing(app, client, db, make_user,
                                                                 form, field, words):
    alice = await make_user(username="alice", email="alice@example.com")
    await open_session(app, client, alice["id"])

    response = await post(client, "/profile/email", form)

    assert response.status_code == 422
    html = await text(response)
    assert words in element_text(html, f"{field}-error")
    assert input_value(html, "email") == form["email"]
    assert (await user_row(db, alice["id"])).email == "alice@example.com"
    assert await audit_rows(db, "update") == [] and await audit_rows(db, "email_change_requested") == []
    assert await rows(db, select(outbox)) == [] and await rows(db, select(account_tokens)) == []


async def test_changing_the_email_saves_it_once_confirmed_and_audits_the_change(app, client, db, make_user,
                                                                             mailed):
    alice = await make_user(username="alice", email="alice@example.com")
    await open_session(app, client, alice["id"])

    response = await post(client, "/profile/email",
                          {"email": "alice.new@example.com", "current_password": PASSWORD})

    assert response.status_code == 200
    assert "alice@example.com" in element_text(await text(response), "profile-account")
    assert (await user_row(db, alice["id"])).email == "alice@example.com", "not before it is confirmed"
    link = mailed_path(mailed, "alice.new@example.com", "email_change", "/confirm-email-change/")
    assert (await post(client, link)).status_code == 303
    account = await user_row(db, alice["id"])
    assert account.email == "alice.new@example.com" and account.version == 2
    (event,) = await audit_rows(db, "update")
    assert event.actor_id == alice["id"] and event.target_id == alice["id"]
    assert event.changes == {"email": ["alice@example.com", "alice.new@example.com"]}
    assert "alice.new@example.com" in element_text(await text(await client.get("/profile")), "profile-account")


async def test_the_email_form_cannot_change_anything_else(app, client, db, make_user):
    alice = await make_user(username="alice", email="alice@example.com")
    await open_session(app, client, alice["id"])

    response = await post(client, "/profile/email", {
        "email": "alice@example.com", "current_password": PASSWORD,
        "role": "Admin", "username": "root", "active": "0", "password_hash": "x"})

    assert response.status_code == 200
    account = await user_row(db, alice["id"])
    assert (account.role, account.username, account.active) == ("Customer", "alice", True)
    assert passwords.hasher.verify(PASSWORD, account.password_hash)
    assert await audit_rows(db, "update") == [] and await mail_to(db, "alice@example.com", "email_change") == []


async def test_an_email_change_by_htmx_carries_its_toast(app, client, make_user):
    alice = await make_user(username="alice", email="alice@example.com")
    await open_session(app, client, alice["id"])
    response = await post(client, "/profile/email",
                          {"email": "alice.new@example.com", "current_password": PASSWORD},
                          headers=htmx("profile-email-form"))
    assert response.status_code == 200
    assert "<html" not in await text(response)
    trigger = json.loads(response.headers.get("HX-Trigger", "{}"))
    items = trigger["toast"]["items"]
    assert any("We sent a confirmation link to alice.new@example.com." in json.dumps(item) for item in items), items


# ---- caching ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/dashboard", "/profile"])
async def test_signed_in_pages_are_not_stored_by_caches(app, client, make_user, path):
    alice = await make_user(username="alice")
    await open_session(app, client, alice["id"])
    response = await client.get(path)
    assert response.status_code == 200
    assert "no-store" in response.headers.get("Cache-Control", "")

