"""Revocation: a session that ends is refused at the very next request on every worker, an
account that loses rights loses its sessions for good (reactivating or promoting it again
revives none), and a password change gives this browser a new session token."""
import asyncio
import re

import httpx
import pytest

from conftest import PASSWORD, csrf_from
from helpers import (
    AUTH_COOKIE, cookie_value, is_login_redirect, open_session, post, send, session_rows,
    set_auth_cookie, set_cookie_line, signed_in, text, user_row,
)

NEW_PASSWORD = "a brand new passphrase for the tests"
REPLAYS = 100


# ---- across workers: a live server with two Hypercorn workers ---------------------------

def fresh_connections(base_url: str) -> httpx.AsyncClient:
    """A client that opens a new connection per request, so that requests spread over the
    workers instead of riding one kept-alive connection to one of them."""
    return httpx.AsyncClient(base_url=base_url, timeout=30,
                             limits=httpx.Limits(max_keepalive_connections=0))


async def log_in_through_the_form(client: httpx.AsyncClient, username: str) -> str:
    """Signs in as the login form does; returns the auth cookie's value."""
    page = await client.get("/login")
    response = await client.post("/login", data={
        "identifier": username, "password": PASSWORD, "csrf_token": csrf_from(page.text)})
    assert response.status_code == 303, (response.status_code, response.text[:300])
    return client.cookies[AUTH_COOKIE]


async def dashboard_with(base_url: str, cookie: str) -> list[httpx.Response]:
    """GET /dashboard with this auth cookie, REPLAYS times back to back, each on a new connection;
    the cookie is sent as a header each time, whatever the answers say to do with it."""
    async with fresh_connections(base_url) as client:
        return [await client.get("/dashboard", headers={"Cookie": f"{AUTH_COOKIE}={cookie}"})
                for _ in range(REPLAYS)]


async def warm_up(base_url: str, cookie: str) -> None:
    """The session in use on both workers: concurrent requests on separate connections."""
    async with fresh_connections(base_url) as client:
        answers = await asyncio.gather(*[
            client.get("/dashboard", headers={"Cookie": f"{AUTH_COOKIE}={cookie}"}) for _ in range(20)])
    assert [a.status_code for a in answers] == [200] * 20


async def ready_to_end_from_another_login(other: httpx.AsyncClient, username: str):
    """A second login of the same user, its profile open: ending the first session is then one
    quick POST (two logins take longer than any reuse of a checked session lasted)."""
    await log_in_through_the_form(other, username)
    profile = (await other.get("/profile")).text
    (sid,) = re.findall(r'action="/profile/sessions/([0-9a-f]+)/end"', profile)

    async def end():
        response = await other.post(f"/profile/sessions/{sid}/end", data={"csrf_token": csrf_from(profile)})
        assert response.status_code == 200 and "Session ended." in response.text
    return end


async def ready_to_log_out(browser: httpx.AsyncClient):
    page = (await browser.get("/profile")).text

    async def end():
        response = await browser.post("/logout", data={"csrf_token": csrf_from(page)})
        assert response.status_code == 303
    return end


@pytest.mark.parametrize("how", ["ended-from-another-login", "logged-out"])
async def test_an_ended_session_is_refused_by_every_worker_at_the_next_request(
        workers_server, make_user, how):
    await make_user(username="alice")
    async with httpx.AsyncClient(base_url=workers_server, timeout=30) as browser, \
            httpx.AsyncClient(base_url=workers_server, timeout=30) as other:
        cookie = await log_in_through_the_form(browser, "alice")
        end = await (ready_to_log_out(browser) if how == "logged-out"
                     else ready_to_end_from_another_login(other, "alice"))
        await warm_up(workers_server, cookie)
        await end()

    answers = await dashboard_with(workers_server, cookie)

    accepted = [i for i, a in enumerate(answers) if a.status_code == 200]
    assert accepted == [], f"{len(accepted)} of {REPLAYS} requests were served after the session ended"
    assert all(a.status_code == 302 and a.headers["Location"].startswith("/login") for a in answers)


# ---- account changes end the account's sessions for good --------------------------------

def edit_form(row, **changes) -> dict:
    """What the inline edit row posts for `row`, with `changes` typed in."""
    values = {"version": str(row.version), "username": row.username, "email": row.email,
              "role": row.role, "active": row.active, "back": "/users", **changes}
    if values.pop("active"):
        values["active"] = "1"
    return values


async def inline_save(client, db, user_id: int, **changes) -> None:
    row = await user_row(db, user_id)
    response = await send(client, f"/users/{user_id}", edit_form(row, **changes), target=f"user-{user_id}")
    assert response.status_code == 200, await text(response)


async def bulk_action(client, db, user_id: int, action: str) -> None:
    response = await send(client, "/users/bulk", [("action", action), ("back", "/users"), ("ids", str(user_id))],
                          target="bulk-form")
    assert response.status_code == 200, await text(response)


# (what takes rights away, what gives them back), through the inline edit and the bulk form
CHANGES = {
    "deactivated-inline": (lambda c, db, i: inline_save(c, db, i, active=False),
                           lambda c, db, i: inline_save(c, db, i, active=True)),
    "demoted-inline": (lambda c, db, i: inline_save(c, db, i, role="Customer"),
                       lambda c, db, i: inline_save(c, db, i, role="Manager")),
    "deactivated-in-bulk": (lambda c, db, i: bulk_action(c, db, i, "deactivate"),
                            lambda c, db, i: bulk_action(c, db, i, "activate")),
    "demoted-in-bulk": (lambda c, db, i: bulk_action(c, db, i, "role:Customer"),
                        lambda c, db, i: bulk_action(c, db, i, "role:Manager")),
    "deleted-in-bulk": (lambda c, db, i: bulk_action(c, db, i, "delete"),
                        lambda c, db, i: post(c, f"/users/{i}/restore")),
}


@pytest.mark.parametrize("change", CHANGES)
async def test_sessions_ended_by_a_change_stay_ended_when_it_is_undone(app, db, make_user, change):
    take_away, give_back = CHANGES[change]
    _, admin = await signed_in(app, make_user, "Admin")
    molly = await make_user("Manager", username="molly")
    laptop, phone = app.test_client(), app.test_client()
    for device in (laptop, phone):
        await open_session(app, device, molly["id"])
    assert (await laptop.get("/users")).status_code == 200

    await take_away(admin, db, molly["id"])
    assert await session_rows(db, molly["id"]) == []
    await give_back(admin, db, molly["id"])

    row = await user_row(db, molly["id"])
    assert (row.active, row.role, row.deleted_at) == (True, "Manager", None)
    for device in (laptop, phone):
        assert is_login_redirect(await device.get("/dashboard"))


@pytest.mark.parametrize("changes", [
    {"role": "Admin"}, {"email": "molly.new@example.com"}, {"username": "molly2"},
], ids=["promoted", "new-email", "renamed"])
async def test_a_change_that_takes_no_right_away_keeps_the_sessions(app, db, make_user, changes):
    _, admin = await signed_in(app, make_user, "Admin")
    molly, device = await signed_in(app, make_user, "Manager", username="molly")

    await inline_save(admin, db, molly["id"], **changes)

    assert len(await session_rows(db, molly["id"])) == 1
    assert (await device.get("/dashboard")).status_code == 200


# ---- a password change rotates this browser's session ------------------------------------

def password_form() -> dict:
    return {"current_password": PASSWORD, "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}


@pytest.mark.parametrize("remember", [False, True], ids=["browser-session", "remembered"])
async def test_a_password_change_gives_a_new_cookie_and_the_old_one_dies(app, db, make_user, remember):
    alice = await make_user(username="alice")
    client = app.test_client()
    old_sid = await open_session(app, client, alice["id"], remember=remember)
    old_cookie = cookie_value(client)

    response = await post(client, "/profile/password", password_form())

    assert response.status_code == 200, await text(response)
    assert set_cookie_line(response) is not None
    new_cookie = cookie_value(client)
    assert new_cookie != old_cookie
    (session,) = await session_rows(db, alice["id"])
    assert session.id != old_sid and session.remember is remember
    assert ("Expires=" in set_cookie_line(response)) is remember
    assert "This device" in await text(response)
    assert (await client.get("/dashboard")).status_code == 200
    copy = app.test_client()
    set_auth_cookie(copy, old_cookie)
    assert is_login_redirect(await copy.get("/dashboard"))
