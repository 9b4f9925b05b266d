"""The security review's attacks, replayed: each test reproduces one and shows it now fails.

Races are real parallel requests against live Hypercorn servers (two workers on PostgreSQL,
the one worker SQLite runs with); the rest use the app in process, where the client address
can be chosen."""
import asyncio
import re
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import select

from conftest import PASSWORD, csrf_from
from helpers import audit_rows, htmx, login, open_session, post, rows, text, user_named
from web.core.tables import users

WRONG = "not the password at all, sorry"


def listed(html: str) -> list[str]:
    return re.findall(r'<td class="col-username"><a [^>]*>([^<]*)</a></td>', html)
NEW_PASSWORD = "plinth Marrow 47 gravel otter-sleet"


@asynccontextmanager
async def visitor(base: str):
    """A client with the cookies and CSRF token a browser would have after opening /login."""
    async with httpx.AsyncClient(base_url=base, follow_redirects=False, timeout=60) as client:
        client.csrf = csrf_from((await client.get("/login")).text)
        yield client


async def send_login(client, identifier: str, password: str) -> int:
    response = await client.post("/login", data={"identifier": identifier, "password": password,
                                                 "csrf_token": client.csrf})
    return response.status_code


# ---- 1. parallel guesses ---------------------------------------------------------------

async def test_parallel_guesses_are_counted_before_they_are_checked(workers_server, make_user, db):
    victim = await make_user(username="victim")
    async with visitor(workers_server) as attacker:
        statuses = await asyncio.gather(*(send_login(attacker, "victim", WRONG) for _ in range(20)))
        assert statuses.count(401) <= 5 and statuses.count(401) + statuses.count(429) == 20, statuses
        assert await send_login(attacker, "victim", PASSWORD) == 429  # right, but the lock holds
    assert len(await audit_rows(db, "login_failed")) == statuses.count(401)
    assert (await user_named(db, "victim")).last_login_at is None
    assert victim


async def test_ten_correct_logins_in_a_row_from_one_address_are_never_throttled(live_server, make_user):
    await make_user(username="regular")
    for _ in range(10):
        async with visitor(live_server) as client:  # no device cookie: counted per address
            assert await send_login(client, "regular", PASSWORD) == 303


async def test_parallel_wrong_current_passwords_in_the_profile_are_throttled_and_audited(workers_server, make_user, db):
    await make_user(username="owner")
    async with visitor(workers_server) as thief:
        assert await send_login(thief, "owner", PASSWORD) == 303
        profile = await thief.get("/profile")
        token = csrf_from(profile.text)

        async def guess():
            response = await thief.post("/profile/password", data={
                "current_password": WRONG, "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD,
                "csrf_token": token})
            return response.text
        answers = await asyncio.gather(*(guess() for _ in range(20)))
    checked = sum("That is not your current password." in a for a in answers)
    refused = sum("Too many wrong passwords" in a for a in answers)
    assert checked <= 5 and checked + refused == 20
    assert len(await audit_rows(db, "password_failed")) == checked


# ---- 2. lock-out by a third party, address rotation ------------------------------------

async def test_the_owners_browser_logs_in_while_an_attacker_has_locked_the_account(live_server, make_user):
    await make_user(username="owner")
    async with visitor(live_server) as owner:
        assert await send_login(owner, "owner", PASSWORD) == 303  # the browser gets its device cookie
        assert "gatehouse-device" in owner.cookies
        await owner.post("/logout", data={"csrf_token": csrf_from((await owner.get("/profile")).text)})
        async with visitor(live_server) as attacker:
            for _ in range(6):
                await send_login(attacker, "owner", WRONG)
            assert await send_login(attacker, "owner", PASSWORD) == 429
            owner.csrf = csrf_from((await owner.get("/login")).text)
            assert await send_login(owner, "owner", PASSWORD) == 303
            assert await send_login(attacker, "owner", PASSWORD) == 429


async def test_a_forged_device_cookie_gets_no_separate_budget(app, make_user):
    await make_user(username="owner")
    client = app.test_client()
    for _ in range(5):
        await login(client, "owner", WRONG)
    client.set_cookie("localhost", "gatehouse-device", "forged.value")
    assert (await login(client, "owner")).status_code == 429


async def test_ipv6_addresses_of_one_64_count_as_one_client(app, make_user):
    await make_user(username="someone")
    client = app.test_client()
    for n in range(1, 6):
        await login(client, f"nobody{n}", WRONG, ip=f"2001:db8:1:2::{n:x}")
    assert (await login(client, "someone", ip="2001:db8:1:2:ffff::1")).status_code == 429
    assert (await login(client, "someone", ip="2001:db8:1:3::1")).status_code == 303


# ---- 3. the registration cap under a race ----------------------------------------------

async def test_parallel_registrations_from_one_address_stop_at_the_cap(workers_server, db):
    async def register(n):
        async with visitor(workers_server) as client:
            response = await client.post("/register", data={
                "username": f"burst{n}", "email": f"burst{n}@example.com", "password": NEW_PASSWORD,
                "password_confirm": NEW_PASSWORD, "csrf_token": client.csrf})
            return response.status_code
    statuses = await asyncio.gather(*(register(n) for n in range(15)))
    created = await rows(db, select(users.c.username).where(users.c.username.like("burst%")))
    assert len(created) == 10 == statuses.count(303), statuses
    assert statuses.count(429) == 5


# ---- 5. enumeration -------------------------------------------------------------------

async def test_a_taken_name_counts_whatever_block_the_form_asks_for(app, make_user):
    await make_user(username="taken.name")
    client = app.test_client()
    form = {"username": "taken.name", "email": "fresh@example.com", "password": NEW_PASSWORD,
            "password_confirm": NEW_PASSWORD}
    headers = htmx("register-password-confirm-error")
    for _ in range(20):
        assert (await post(client, "/register", form, headers=headers)).status_code == 422
    assert (await post(client, "/register", form, headers=headers)).status_code == 429


async def test_the_profile_says_nothing_about_an_address_before_the_password_is_right(app, make_user, db):
    me = await make_user(username="me")
    await make_user(username="other", email="other@example.com")
    client = app.test_client()
    await open_session(app, client, me["id"])
    answers = []
    for email in ("other@example.com", "nobody.here@example.com"):
        response = await post(client, "/profile/email", {"email": email, "current_password": WRONG},
                              headers=htmx("profile-email-form"))
        answers.append((response.status_code, re.sub(r'value="[^"]*"', "", await text(response))))
    assert answers[0] == answers[1]
    assert "already exists" not in answers[0][1]
    assert len(await audit_rows(db, "password_failed")) == 2


# ---- 9. authorization decided on the row being changed ---------------------------------

async def test_a_managers_delete_never_removes_a_customer_just_made_admin(workers_server, make_user, db):
    await make_user("Admin", username="boss")
    await make_user("Manager", username="manny")
    async with visitor(workers_server) as admin, visitor(workers_server) as manager:
        assert await send_login(admin, "boss", PASSWORD) == 303
        assert await send_login(manager, "manny", PASSWORD) == 303
        admin_token = csrf_from((await admin.get("/users")).text)
        manager_token = csrf_from((await manager.get("/users")).text)
        for n in range(12):
            target = await make_user("Customer", username=f"target{n}")
            await asyncio.gather(
                admin.post("/users/bulk", data={"action": "role:Admin", "ids": str(target["id"]),
                                                "csrf_token": admin_token}),
                manager.post(f"/users/{target['id']}/delete", data={"csrf_token": manager_token}))
            after = await user_named(db, f"target{n}")
            assert not (after.role == "Admin" and after.deleted_at is not None), n


# ---- 11. what the audit log may show ---------------------------------------------------

@pytest.mark.parametrize("typed, shown", [
    ("Tr0ub4dor&3 horse staple!", "(unrecognised)"),  # a password typed in the name box
    ("no.such.person", "no.such.person"),
    ("nobody@example.com", "nobody@example.com"),
])
async def test_a_failed_login_logs_the_name_only_when_it_looks_like_one(app, db, typed, shown):
    await login(app.test_client(), typed, WRONG)
    (event,) = await audit_rows(db, "login_failed")
    assert event.changes["identifier"] == [None, shown]


# ---- 2. Admins see and lift lock-outs --------------------------------------------------

async def test_admins_find_locked_accounts_and_unlock_them_audited(app, db, make_user):
    await make_user(username="locked.out")
    await make_user(username="fine.user")
    anyone = app.test_client()
    for _ in range(5):
        await login(anyone, "locked.out", WRONG, ip="198.51.100.1")
    boss = await make_user("Admin", username="boss")
    admin = app.test_client()
    await open_session(app, admin, boss["id"])

    locked_view = await text(await admin.get("/users?active=locked"))
    assert listed(locked_view) == ["locked.out"]
    assert 'class="badge badge-locked"' in locked_view

    target = await user_named(db, "locked.out")
    assert (await post(admin, f"/users/{target.id}/unlock", {})).status_code == 303
    assert listed(await text(await admin.get("/users?active=locked"))) == []
    (event,) = await audit_rows(db, "unlock")
    assert (event.actor_id, event.target_id) == (boss["id"], target.id)
    assert (await login(app.test_client(), "locked.out", ip="198.51.100.2")).status_code == 303


async def test_a_manager_cannot_unlock_an_admin(app, db, make_user):
    chief = await make_user("Admin", username="chief")
    manny = await make_user("Manager", username="manny")
    client = app.test_client()
    await open_session(app, client, manny["id"])
    assert (await post(client, f"/users/{chief['id']}/unlock", {})).status_code == 403
    assert await audit_rows(db, "unlock") == []


# ---- 11. refusals in the audit trail, and nothing written from another site ------------

async def test_a_signed_in_persons_refusals_are_audited_up_to_a_limit(app, db, make_user):
    customer = await make_user("Customer", username="curious")
    client = app.test_client()
    await open_session(app, client, customer["id"])
    for _ in range(25):
        assert (await client.get("/users")).status_code == 403
    refused = await audit_rows(db, "refused")
    assert len(refused) == 20
    assert refused[0].changes["request"] == [None, "GET /users"]
    assert refused[0].changes["status"] == [None, 403]


async def test_an_export_linked_from_another_site_writes_nothing(app, db, make_user):
    boss = await make_user("Admin", username="boss")
    client = app.test_client()
    await open_session(app, client, boss["id"])
    response = await client.get("/audit.csv", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert response.status_code == 403
    assert await audit_rows(db, "export") == [] and await audit_rows(db, "refused") == []
    same_site = await client.get("/audit.csv", headers={"Sec-Fetch-Site": "same-origin"})
    assert same_site.status_code == 200
    assert len(await audit_rows(db, "export")) == 1
