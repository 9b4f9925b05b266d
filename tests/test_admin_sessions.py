"""An Admin sees another user's live sessions (on the user's page) and ends one or all of them: each end is audited, works without JavaScript, and signs that device out at
its next request. Nobody else may."""
import re
from datetime import timedelta

import pytest
from sqlalchemy import update

from helpers import (
    audit_rows, element_html, htmx, is_login_redirect, location, open_session, page, send, session_rows,
    signed_in, text,
)
from web.core.db import utcnow
from web.core.tables import sessions


def sessions_url(user_id: int) -> str:
    """Where the end forms post."""
    return f"/users/{user_id}/sessions"


def user_page(user_id: int) -> str:
    return f"/users/{user_id}"


async def devices(app, user_id: int, *agents: str) -> dict[str, tuple]:
    """A signed-in test client per user agent: {agent: (client, session id)}."""
    found = {}
    for agent in agents:
        client = app.test_client()
        found[agent] = (client, await open_session(app, client, user_id, user_agent=agent, ip="203.0.113.5"))
    return found


async def test_an_admin_sees_each_live_session_of_a_user(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    alice, bob = await make_user(username="alice"), await make_user(username="bob")
    alices = await devices(app, alice["id"], "Laptop Firefox", "Phone Safari", "Old Tablet")
    await devices(app, bob["id"], "Bob's Browser")
    async with db.write() as conn:  # past its absolute lifetime: no longer live
        await conn.execute(update(sessions).where(sessions.c.id == alices["Old Tablet"][1])
                           .values(expires_at=utcnow() - timedelta(seconds=1)))

    listed = element_html(await page(admin, user_page(alice["id"])), "user-sessions")

    assert "Laptop Firefox" in listed and "Phone Safari" in listed and "203.0.113.5" in listed
    assert "Old Tablet" not in listed and "Bob&#39;s Browser" not in listed
    assert set(re.findall(r'action="/users/\d+/sessions/([0-9a-f]+)/end"', listed)) == {
        alices["Laptop Firefox"][1], alices["Phone Safari"][1]}
    assert f'action="/users/{alice["id"]}/sessions/end-all"' in listed


@pytest.mark.parametrize("hx", [True, False], ids=["htmx", "no-javascript"])
async def test_ending_one_session_signs_that_device_out_and_is_audited(app, db, make_user, hx):
    boss, admin = await signed_in(app, make_user, "Admin")
    alice = await make_user(username="alice")
    alices = await devices(app, alice["id"], "Laptop Firefox", "Phone Safari")
    phone, phone_sid = alices["Phone Safari"]

    response = await send(admin, f"{sessions_url(alice['id'])}/{phone_sid}/end", target="user-sessions", hx=hx)

    if hx:
        body = await text(response)
        assert response.status_code == 200 and "<html" not in body
        assert 'id="user-sessions"' in body and "Phone Safari" not in body and "Laptop Firefox" in body
    else:
        assert response.status_code == 303 and location(response) == user_page(alice["id"]) + "#user-sessions"
        assert "Session of alice ended." in await page(admin, user_page(alice["id"]))
    assert is_login_redirect(await phone.get("/dashboard"))
    assert (await alices["Laptop Firefox"][0].get("/dashboard")).status_code == 200
    (event,) = await audit_rows(db, "session_end")
    assert (event.actor_id, event.target_type, event.target_id) == (boss["id"], "user", alice["id"])
    assert event.changes == {"sessions_ended": [None, 1]}


@pytest.mark.parametrize("hx", [True, False], ids=["htmx", "no-javascript"])
async def test_ending_all_sessions_signs_every_device_out_and_is_audited_once(app, db, make_user, hx):
    boss, admin = await signed_in(app, make_user, "Admin")
    alice = await make_user(username="alice")
    alices = await devices(app, alice["id"], "Laptop Firefox", "Phone Safari", "Work PC")

    response = await send(admin, f"{sessions_url(alice['id'])}/end-all", target="user-sessions", hx=hx)

    assert response.status_code == (200 if hx else 303)
    assert await session_rows(db, alice["id"]) == []
    for client, _ in alices.values():
        assert is_login_redirect(await client.get("/dashboard"))
    assert (await admin.get("/dashboard")).status_code == 200
    (event,) = await audit_rows(db, "session_end")
    assert (event.actor_id, event.target_id, event.changes) == (boss["id"], alice["id"], {"sessions_ended": [None, 3]})


async def test_a_session_of_someone_else_or_already_gone_is_not_ended_through_a_users_page(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    alice, bob = await make_user(username="alice"), await make_user(username="bob")
    bobs = await devices(app, bob["id"], "Bob's Browser")
    bob_client, bob_sid = bobs["Bob's Browser"]

    for sid in (bob_sid, "0" * 64):
        response = await send(admin, f"{sessions_url(alice['id'])}/{sid}/end", target="user-sessions")
        assert response.status_code == 200
    assert (await bob_client.get("/dashboard")).status_code == 200
    assert await audit_rows(db, "session_end") == []


@pytest.mark.parametrize("role", ["Manager", "Customer"])
async def test_only_admins_see_or_end_anyones_sessions(app, db, make_user, role):
    _, someone = await signed_in(app, make_user, role)
    alice = await make_user(username="alice")
    alices = await devices(app, alice["id"], "Laptop Firefox")
    (_, sid), = alices.values()

    shown = await someone.get(user_page(alice["id"]))
    assert shown.status_code == (200 if role == "Manager" else 403)
    assert 'id="user-sessions"' not in await text(shown) and "Laptop Firefox" not in await text(shown)
    for path in (f"{sessions_url(alice['id'])}/{sid}/end", f"{sessions_url(alice['id'])}/end-all"):
        assert (await send(someone, path, hx=False)).status_code == 403
    assert len(await session_rows(db, alice["id"])) == 1
    assert await audit_rows(db, "session_end") == []


async def test_a_missing_or_deleted_user_has_no_page_and_no_sessions_to_end(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    gone = await make_user(username="gone")
    await send(admin, f"/users/{gone['id']}/delete", {"back": "/users"}, hx=False)
    for user_id in (gone["id"], 999_999):
        assert (await admin.get(user_page(user_id))).status_code == 404
        assert (await send(admin, f"{sessions_url(user_id)}/end-all", hx=False)).status_code == 404


async def test_the_users_row_links_to_the_sessions_for_admins_only(app, make_user):
    alice = await make_user(username="alice")
    link = f'href="{user_page(alice["id"])}#user-sessions"'
    _, admin = await signed_in(app, make_user, "Admin")
    _, manager = await signed_in(app, make_user, "Manager")
    assert link in await page(admin, "/users")
    assert link in await page(admin, f"/users/{alice['id']}/row", **htmx(f"user-{alice['id']}"))
    assert link not in await page(manager, "/users")
