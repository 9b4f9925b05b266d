"""Attacks on the second factors, passkeys and re-authentication (issue 14), over HTTP: what
an attacker holding only a password, or only a session cookie, tries, and what each meets."""
import asyncio
import re

from sqlalchemy import select

from conftest import PASSWORD, make_config
from helpers import (
    audit_rows, location, login, open_session, post, rows, scalar, send, session_rows, signed_in, text, token,
    user_row,
)
from test_invitations import accept, invited
from test_passkeys import options, send_answer, with_passkey
from test_register import register
from test_reauthentication import assert_asked, confirm, later
from test_second_factors import (
    KEY_A, KEY_B, LOGIN_COOKIE, NOW, SECOND_STEP, STEP, at_time, code_at, enrolled, half_logged_in, second_step,
    signed_in_now,
)
from web import create_app
from web.core import audit_trail as audit
from web.core.tables import login_challenges, totp_factors

NEW_PASSWORD = "copper lantern meadow quietly"


def wrong_code(secret: str, moment: float) -> str:
    return "000000" if code_at(secret, moment) != "000000" else "111111"


# ---- only a password: the half-done login ----------------------------------------------

async def test_the_half_done_login_opens_no_other_page_and_no_write(app, db, make_user):
    alice = await make_user("Admin", username="alice")
    await enrolled(db, app.config["GATEHOUSE"], alice["id"])
    client = app.test_client()
    await half_logged_in(db, client, alice["id"])
    for path in ("/dashboard", "/profile", "/users", f"/users/{alice['id']}", "/audit", "/audit.csv"):
        assert location(await client.get(path)).startswith("/login"), path
    for path in ("/profile/factors/totp", "/profile/factors/recovery-codes", "/profile/passkeys/options",
                 "/reauthenticate/passkey/options", "/users/bulk"):
        assert location(await post(client, path, {})).startswith("/login"), path
    assert await session_rows(db, alice["id"]) == []


async def test_a_used_or_expired_challenge_cookie_does_not_log_in_again(app, db, make_user):
    alice = await make_user(username="alice")
    secret, _ = await enrolled(db, app.config["GATEHOUSE"], alice["id"], at=NOW - 3 * STEP)
    at_time(app, NOW)
    client = app.test_client()
    cookie = await half_logged_in(db, client, alice["id"])
    assert (await second_step(client, code_at(secret, NOW))).status_code == 303
    replay = app.test_client()
    replay.set_cookie("localhost", LOGIN_COOKIE, cookie)
    response = await second_step(replay, code_at(secret, NOW + STEP))
    assert response.status_code == 303 and location(response) == "/login"
    assert not await signed_in_now(replay)


async def test_a_password_change_or_reset_ends_the_half_done_logins_of_the_old_password(app, db, make_user, mailed):
    """Someone who had the old password and stands at the second step (waiting for a phished
    code) is sent back to the password when the owner changes it or resets it."""
    alice = await make_user(username="alice")
    secret, _ = await enrolled(db, app.config["GATEHOUSE"], alice["id"], at=NOW - 3 * STEP)
    at_time(app, NOW)
    attacker = app.test_client()
    await half_logged_in(db, attacker, alice["id"])
    owner = app.test_client()
    await open_session(app, owner, alice["id"])
    changed = await post(owner, "/profile/password", {"current_password": PASSWORD,
                                                      "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD})
    assert changed.status_code == 200, (await text(changed))[:300]
    response = await second_step(attacker, code_at(secret, NOW))
    assert location(response) == "/login" and not await signed_in_now(attacker)

    await half_logged_in(db, attacker, alice["id"])
    assert (await post(app.test_client(), "/forgot-password", {"identifier": "alice"})).status_code == 200
    [link] = [m for m in mailed if m.kind == "reset"]
    token = re.search(r"/reset-password/([A-Za-z0-9_-]+)", link.text).group(1)
    password = "violet harbour pencil sunrise"
    reset = await post(app.test_client(), f"/reset-password/{token}",
                       {"password": password, "password_confirm": password})
    assert reset.status_code == 303
    response = await second_step(attacker, code_at(secret, NOW + STEP))
    assert location(response) == "/login" and not await signed_in_now(attacker)
    assert await rows(db, select(login_challenges.c.id)) == []


async def test_an_invitation_or_a_registration_sets_up_a_required_factor_first(db, database_url, make_user):
    """REQUIRE_2FA_ROLES: an account of such a role gets no session before it has a factor,
    whether its password was typed at the login or just chosen."""
    app = create_app(make_config(database_url, require_2fa_roles=("Admin", "Customer")))
    registered = await register(app.test_client())
    assert registered.status_code == 303 and location(registered) == "/login/enrol"
    assert await session_rows(db) == []
    _, inviter = await signed_in(app, make_user, "Admin")
    newbie, token = await invited(inviter, db, "newbie", role="Admin")
    client = app.test_client()
    response = await accept(client, token)
    assert response.status_code == 303 and location(response) == "/login/enrol"
    assert not await signed_in_now(client) and await session_rows(db, newbie.id) == []
    page = await text(await client.get("/login/enrol"))
    secret = re.search(r'<code id="totp-secret" class="secret">([A-Z2-7 ]+)</code>', page).group(1).replace(" ", "")
    at_time(app, NOW)
    done = await post(client, "/login/enrol", {"code": code_at(secret, NOW)})
    assert done.status_code == 200 and await signed_in_now(client)
    await app.db.dispose()


async def test_one_recovery_code_sent_twice_at_once_logs_in_once(app, db, make_user):
    alice = await make_user(username="alice")
    _, recovery = await enrolled(db, app.config["GATEHOUSE"], alice["id"])
    browsers = [app.test_client() for _ in range(2)]
    forms = []
    for browser in browsers:
        await half_logged_in(db, browser, alice["id"])
        forms.append({"csrf_token": await token(browser), "code": recovery[0]})
    answers = await asyncio.gather(*(b.post(SECOND_STEP, form=f) for b, f in zip(browsers, forms)))
    assert sorted(a.status_code for a in answers) == [303, 401]
    assert len(await session_rows(db, alice["id"])) == 1


async def test_a_passkey_answer_counts_only_for_what_it_was_asked_for(app, db, make_user):
    """An answer to a re-authentication's or a passwordless sign-in's challenge does not
    complete someone's second step, nor a re-authentication's a sign-in."""
    alice, key = await with_passkey(app, make_user)
    owner = app.test_client()
    await open_session(app, owner, alice["id"])
    for_reauth = key.get(await options(owner, "/reauthenticate/passkey/options"))
    for_sign_in = key.get(await options(app.test_client(), "/login/passkey/options"))
    attacker = app.test_client()
    await half_logged_in(db, attacker, alice["id"])
    for answer in (for_reauth, for_sign_in):
        response = await attacker.post(SECOND_STEP + "/passkey", form={"csrf_token": await token(attacker),
                                                                      "credential": answer})
        assert response.status_code == 401 and not await signed_in_now(attacker)
    assert (await send_answer(app.test_client(), for_reauth)).status_code == 401
    assert len(await session_rows(db, alice["id"])) == 2  # the owner's two, no other


# ---- code guesses ----------------------------------------------------------------------

async def test_code_guesses_from_many_addresses_are_counted_against_the_account(app, db, make_user):
    alice = await make_user(username="alice")
    secret, _ = await enrolled(db, app.config["GATEHOUSE"], alice["id"], at=NOW - 3 * STEP)
    at_time(app, NOW)
    client = app.test_client()
    await half_logged_in(db, client, alice["id"])

    async def guess(code: str, n: int):
        return await client.post(SECOND_STEP, form={"csrf_token": await token(client), "code": code},
                                 scope_base={"client": (f"198.51.100.{n}", 50000)})
    for n in range(app.config["GATEHOUSE"].throttle_free_failures):
        assert (await guess(wrong_code(secret, NOW), n)).status_code == 401
    assert (await guess(code_at(secret, NOW), 99)).status_code == 429


async def test_enrolment_codes_are_throttled_in_the_profile(app, db, make_user):
    """A stolen session cannot guess the code of an app its owner began to set up (the codes
    it would then show prove the account's ownership ever after)."""
    alice, client = await signed_in(app, make_user, "Customer")
    started = await post(client, "/profile/factors/totp", {})
    secret = re.search(r'<code id="totp-secret" class="secret">([A-Z2-7 ]+)</code>',
                       await text(started)).group(1).replace(" ", "")
    at_time(app, NOW)
    for _ in range(app.config["GATEHOUSE"].throttle_free_failures):
        wrong = await post(client, "/profile/factors/totp/confirm", {"code": wrong_code(secret, NOW)})
        assert wrong.status_code == 422
    locked = await post(client, "/profile/factors/totp/confirm", {"code": code_at(secret, NOW)})
    assert locked.status_code == 429 and "Try again in" in await text(locked)
    assert await scalar(db, select(totp_factors.c.confirmed_at)) is None


async def test_enrolment_codes_are_throttled_at_the_login(db, database_url, make_user):
    app = create_app(make_config(database_url, require_2fa_roles=("Admin",)))
    await make_user("Admin", username="root")
    client = app.test_client()
    assert location(await login(client, "root")) == "/login/enrol"
    page = await text(await client.get("/login/enrol"))
    secret = re.search(r'<code id="totp-secret" class="secret">([A-Z2-7 ]+)</code>', page).group(1).replace(" ", "")
    at_time(app, NOW)
    for _ in range(app.config["GATEHOUSE"].throttle_free_failures):
        assert (await post(client, "/login/enrol", {"code": wrong_code(secret, NOW)})).status_code == 422
    locked = await post(client, "/login/enrol", {"code": code_at(secret, NOW)})
    assert locked.status_code == 429 and not await signed_in_now(client)
    await app.db.dispose()


# ---- only a session cookie -------------------------------------------------------------

async def test_an_admin_ending_sessions_from_a_users_page_needs_a_recent_proof(app, db, make_user, monkeypatch):
    """The profile's "end other sessions" asks for a proof: ending one's own (or anyone's)
    sessions from the users pages must too, or a stolen session locks its owner out."""
    me, client = await signed_in(app, make_user, "Admin")
    mine = await open_session(app, app.test_client(), me["id"], user_agent="Phone")
    later(monkeypatch, 11)
    for path in (f"/users/{me['id']}/sessions/end-all", f"/users/{me['id']}/sessions/{mine}/end"):
        asked = await send(client, path, target="user-sessions")
        await assert_asked(asked)
    assert len(await session_rows(db, me["id"])) == 2
    assert await audit_rows(db, "session_end") == []
    ended = await confirm(client, asked, target="user-sessions")
    assert ended.status_code == 200 and (await text(ended)).startswith('<section id="user-sessions"')
    assert [s.user_agent for s in await session_rows(db, me["id"])] == ["pytest"]


async def test_bringing_back_a_deleted_user_or_revoking_an_invitation_needs_a_proof(app, db, make_user, monkeypatch):
    """Undo of a delete and a revert of one create an account again (its password and role
    with it); revoking an invitation deletes one: like creating and deleting, each waits."""
    _, client = await signed_in(app, make_user, "Admin")
    gone = await make_user("Admin", username="formeradmin")
    deleted = await send(client, f"/users/{gone['id']}/delete", {"back": "/users"}, target="users-table")
    assert deleted.status_code == 200
    [deletion] = await audit_rows(db, "delete")
    newbie, _ = await invited(client, db, "newbie")
    later(monkeypatch, 11)
    for path in (f"/users/{gone['id']}/restore?back=/users", f"/audit/{deletion.id}/revert",
                 f"/users/{newbie.id}/invitation/revoke"):
        asked = await send(client, path, {"back": "/users"}, target="users-table")
        await assert_asked(asked)
    assert (await user_row(db, gone["id"])).deleted_at is not None
    assert (await user_row(db, newbie.id)).deleted_at is None
    assert await audit_rows(db, "restore") == [] and await audit_rows(db, "invite_revoked") == []
    await confirm(client, asked, target="users-table")
    assert (await user_row(db, newbie.id)).deleted_at is not None


async def test_a_stale_session_cannot_read_or_confirm_an_app_its_owner_began(app, db, make_user, monkeypatch):
    """The owner began setting up an app (with a proof) and left it: a copy of the session
    cookie, later, must not read that secret (a code generator for the account ever after)
    nor confirm it and see the recovery codes."""
    _, client = await signed_in(app, make_user, "Customer")
    started = await post(client, "/profile/factors/totp", {})
    secret = re.search(r'<code id="totp-secret" class="secret">([A-Z2-7 ]+)</code>',
                       await text(started)).group(1).replace(" ", "")
    later(monkeypatch, 11)
    at_time(app, NOW)
    for code in ("", wrong_code(secret, NOW), code_at(secret, NOW)):
        answer = await send(client, "/profile/factors/totp/confirm", {"code": code}, target="profile-factors")
        body = await assert_asked(answer)
        assert secret[:8] not in body.replace(" ", "") and "recovery-codes-list" not in body
    assert await scalar(db, select(totp_factors.c.confirmed_at)) is None


async def test_deactivating_ones_own_account_needs_a_recent_proof(app, db, make_user, monkeypatch):
    """It would end every session of the account and lock its owner out: a copy of the
    session cookie must not do it unasked (deactivating others stays an unguarded change)."""
    me, client = await signed_in(app, make_user, "Admin")
    await make_user("Admin")  # not the last one
    later(monkeypatch, 11)
    mine = await user_row(db, me["id"])
    form = {"version": str(mine.version), "username": mine.username, "email": mine.email, "role": "Admin",
            "back": "/users"}  # no "active": the box unticked
    await assert_asked(await send(client, f"/users/{me['id']}", form, target=f"user-{me['id']}"))
    assert (await user_row(db, me["id"])).active and len(await session_rows(db, me["id"])) == 1
    # Nor by reverting, from the audit log, the event that once switched the account on.
    async with db.write() as conn:
        await audit.record(conn, "update", "user", me["id"], changes={"active": [False, True]})
    [switched_on] = await audit_rows(db, "update")
    form = [("field", "active"), ("version", str(mine.version)), ("back", "/audit")]
    await assert_asked(await send(client, f"/audit/{switched_on.id}/revert", form, target=f"event-{switched_on.id}"))
    assert (await user_row(db, me["id"])).active


def test_no_key_shows_in_the_configurations_repr():
    """A configuration printed in a log or a traceback must not hand out the keys that
    decrypt every TOTP secret (FACTOR_KEYS), sign sessions or key the audit chain."""
    config = make_config("sqlite+aiosqlite://", factor_keys=(KEY_A, KEY_B), audit_hmac_key="chain-key-1234")
    shown = repr(config)
    assert KEY_A not in shown and KEY_B not in shown and config.secret_key not in shown
    assert "chain-key-1234" not in shown and "sqlite+aiosqlite://" in shown
    with_password = repr(make_config("postgresql+asyncpg://gatehouse:hunter2-pw@db/gatehouse"))
    assert "hunter2-pw" not in with_password and "postgresql+asyncpg://gatehouse:***@db/gatehouse" in with_password
