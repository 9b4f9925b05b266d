"""Second factors over HTTP: TOTP codes (window, replay, parallel replay, throttle), recovery
codes, the login's second step, forced enrolment, key rotation, resets.

Codes are computed for a chosen time and the app's clock is set to it (FACTOR_CLOCK): no test
waits for a TOTP step. Most tests start from the half-done login directly (a challenge row and
its cookie, as the right password leaves them): only the tests about the password step hash one.
"""
import asyncio
import re
import time

import httpx
import pyotp
import pytest
from sqlalchemy import select, update

from conftest import make_config
from helpers import (
    audit_rows, form_token, location, login, mail_to, open_session, post, rows, run_cli, run_module, scalar,
    session_rows, signed_in, text, unlock_throttle,
)
from web import create_app
from web.accounts import challenges, factors, maintenance, recovery_codes as codes, totp
from web.accounts.factor_crypto import keyring
from web.accounts.sessions import session_id
from web.core.db import utcnow
from web.core.tables import login_challenges, recovery_codes, totp_factors

NOW = 1_800_000_015.0  # 15 s into a step
STEP = totp.STEP_SECONDS
SECOND_STEP = "/login/second-step"
LOGIN_COOKIE = "gatehouse-login"
run = run_module()
KEY_A = "n2Rm4Xw1Jb7kS0pLq9VtYc3aZe6Hf8Gd5Ui2Ow4Kx0E="
KEY_B = "Qk8xZ2Vb7mN1pR4tY6uW3sD9fG0hJ5kL2cV8bN4mX1A="


def code_at(secret: str, moment: float) -> str:
    return pyotp.TOTP(secret).at(moment)


async def enrolled(db, config, user_id: int, at: float = NOW) -> tuple[str, list[str]]:
    """An account with an authenticator app (confirmed by the code of `at`) and ten codes."""
    ring = keyring(config)
    async with db.write() as conn:
        secret = await factors.start_enrolment(conn, user_id, ring)
        recovery = await factors.confirm_enrolment(conn, user_id, code_at(secret, at), ring, at)
    return secret, recovery


async def new_challenge(db, user_id: int, next_path: str = "") -> str:
    """A half-done login as the right password leaves it; the token its cookie carries."""
    token = f"challenge-{user_id}-{time.monotonic_ns()}"
    now = utcnow()
    async with db.write() as conn:
        await conn.execute(login_challenges.insert().values(
            id=session_id(token), user_id=user_id, remember=False, next_path=next_path, stage=challenges.VERIFY,
            created_at=now, expires_at=now + challenges.LIFETIME))
    return token


async def half_logged_in(db, client, user_id: int, next_path: str = "") -> str:
    """`client` as the right password leaves it: a challenge and its cookie, no session."""
    token = await new_challenge(db, user_id, next_path)
    client.set_cookie("localhost", LOGIN_COOKIE, token)
    return token


def at_time(app, moment: float) -> None:
    app.config["FACTOR_CLOCK"] = lambda: moment


async def second_step(client, code: str):
    return await post(client, SECOND_STEP, {"code": code})


async def signed_in_now(client) -> bool:
    return (await client.get("/dashboard")).status_code == 200


# ---- the code's window and replay ------------------------------------------------------

def test_a_code_is_accepted_one_step_either_side_and_not_two():
    secret = totp.new_secret()
    for offset in (-STEP, 0, STEP):
        assert totp.matching_step(secret, code_at(secret, NOW + offset), NOW) == totp.step_of(NOW + offset)
    for offset in (-2 * STEP, 2 * STEP):
        assert totp.matching_step(secret, code_at(secret, NOW + offset), NOW) is None
    assert totp.matching_step(secret, "12345", NOW) is None
    assert totp.matching_step(secret, "١٢٣٤٥٦", NOW) is None  # digits, but not ASCII ones


async def test_the_right_code_logs_in_and_a_used_step_is_refused_afterwards(app, db, make_user):
    alice = await make_user(username="alice")
    secret, _ = await enrolled(db, app.config["GATEHOUSE"], alice["id"], at=NOW - STEP)
    at_time(app, NOW)
    first = app.test_client()
    await half_logged_in(db, first, alice["id"], next_path="/profile")
    response = await second_step(first, code_at(secret, NOW))
    assert response.status_code == 303 and location(response) == "/profile"
    assert await signed_in_now(first)
    [event] = await audit_rows(db, "login")
    assert event.changes == {"factor": [None, "totp"]}
    # The same code again, and the step before it (within the window, but older): refused.
    for code in (code_at(secret, NOW), code_at(secret, NOW - STEP)):
        again = app.test_client()
        await half_logged_in(db, again, alice["id"])
        response = await second_step(again, code)
        assert response.status_code == 401
        assert "not right, or was used already" in await text(response)
        assert not await signed_in_now(again)
    later = app.test_client()
    await half_logged_in(db, later, alice["id"])
    assert (await second_step(later, code_at(secret, NOW + STEP))).status_code == 303


async def test_the_code_that_confirms_enrolment_uses_up_its_step(app, db, make_user):
    alice = await make_user(username="alice")
    secret, _ = await enrolled(db, app.config["GATEHOUSE"], alice["id"], at=NOW)
    at_time(app, NOW)
    client = app.test_client()
    await half_logged_in(db, client, alice["id"])
    assert (await second_step(client, code_at(secret, NOW))).status_code == 401


async def test_parallel_submissions_of_one_code_exactly_one_succeeds(workers_server, db, make_user):
    """Four browsers, each half logged in, send the same code at the same moment to the real
    server (two workers on PostgreSQL): one logs in, three are refused."""
    alice = await make_user(username="alice")
    config = make_config(db.url)
    secret, _ = await enrolled(db, config, alice["id"], at=time.time() - 3 * STEP)
    browsers = [httpx.AsyncClient(base_url=workers_server, timeout=60) for _ in range(4)]
    try:
        forms = []
        for browser in browsers:
            browser.cookies.set(LOGIN_COOKIE, await new_challenge(db, alice["id"]))
            forms.append({"csrf_token": await form_token(browser, SECOND_STEP)})
        code = pyotp.TOTP(secret).now()
        answers = await asyncio.gather(*(b.post(SECOND_STEP, data={**f, "code": code}) for b, f in zip(browsers, forms)))
    finally:
        for browser in browsers:
            await browser.aclose()
    assert sorted(a.status_code for a in answers) == [303, 401, 401, 401], [a.text[:200] for a in answers]
    assert len(await session_rows(db, alice["id"])) == 1
    assert len(await audit_rows(db, "second_factor_failed")) == 3


# ---- throttling ------------------------------------------------------------------------

async def test_wrong_codes_are_throttled_like_passwords_and_audited(app, db, make_user):
    alice = await make_user(username="alice")
    secret, _ = await enrolled(db, app.config["GATEHOUSE"], alice["id"], at=NOW - STEP)
    at_time(app, NOW)
    client = app.test_client()
    await half_logged_in(db, client, alice["id"])
    wrong = "000000" if code_at(secret, NOW) != "000000" else "111111"
    for _ in range(app.config["GATEHOUSE"].throttle_free_failures):
        assert (await second_step(client, wrong)).status_code == 401
    locked = await second_step(client, code_at(secret, NOW))  # even the right code waits
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert "Too many wrong codes" in await text(locked)
    assert len(await audit_rows(db, "second_factor_failed")) == 5
    await unlock_throttle(db)
    assert (await second_step(client, code_at(secret, NOW))).status_code == 303


# ---- recovery codes --------------------------------------------------------------------

async def test_a_recovery_code_logs_in_once_and_says_how_many_are_left(app, db, make_user):
    alice = await make_user(username="alice")
    _, recovery = await enrolled(db, app.config["GATEHOUSE"], alice["id"])
    assert len(recovery) == 10 and len(set(recovery)) == 10
    assert all(codes.normalise(code) == code for code in recovery)
    client = app.test_client()
    await half_logged_in(db, client, alice["id"])
    typed = recovery[3].upper().replace("-", " ")  # as read aloud, any case, any spacing
    response = await post(client, SECOND_STEP, {"code": typed}, headers={"HX-Request": "true"})
    assert response.status_code == 200 and response.headers["HX-Location"] == "/dashboard"
    assert "Recovery code used: 9 left" in await text(await client.get("/dashboard"))
    [event] = await audit_rows(db, "login")
    assert event.changes == {"factor": [None, "recovery"]}
    again = app.test_client()
    await half_logged_in(db, again, alice["id"])
    assert (await second_step(again, recovery[3])).status_code == 401


async def test_recovery_codes_are_stored_as_keyed_hashes(app, db, make_user):
    alice = await make_user(username="alice")
    secret, recovery = await enrolled(db, app.config["GATEHOUSE"], alice["id"])
    async with db.read() as conn:
        stored = list((await conn.execute(select(recovery_codes.c.code_hash))).scalars())
        ciphertext = (await conn.execute(select(totp_factors.c.secret))).scalar_one()
    assert len(stored) == 10 and all(re.fullmatch("[0-9a-f]{64}", h) for h in stored)
    assert not any(code in stored or code.replace("-", "") in h for code in recovery for h in stored)
    assert secret not in ciphertext


async def test_making_new_recovery_codes_invalidates_the_old_set(app, db, make_user):
    alice = await make_user(username="alice")
    _, old = await enrolled(db, app.config["GATEHOUSE"], alice["id"])
    owner = app.test_client()
    await open_session(app, owner, alice["id"])
    response = await post(owner, "/profile/factors/recovery-codes", {})
    assert response.status_code == 200
    new = re.search(r'<pre id="recovery-codes-list" class="codes">([^<]*)</pre>', await text(response)).group(1).split()
    assert len(new) == 10 and not set(new) & set(old)
    assert len(await audit_rows(db, "recovery_codes_replaced")) == 1
    for code, status in ((old[0], 401), (new[0], 303)):
        client = app.test_client()
        await half_logged_in(db, client, alice["id"])
        assert (await second_step(client, code)).status_code == status


async def test_removing_the_app_in_the_profile_removes_its_codes_audited_and_mailed(app, db, make_user, mailed):
    alice = await make_user(username="alice")
    await enrolled(db, app.config["GATEHOUSE"], alice["id"])
    owner = app.test_client()
    await open_session(app, owner, alice["id"])
    response = await post(owner, "/profile/factors/remove", {}, headers={"HX-Request": "true", "HX-Target": "profile-factors"})
    assert response.status_code == 200 and "Not set up." in await text(response)
    assert await rows(db, select(totp_factors.c.user_id)) == [] and await rows(db, select(recovery_codes.c.id)) == []
    [event] = await audit_rows(db, "second_factor_removed")
    assert event.changes == {"factor": ["totp", None]}
    [notice] = [m for m in mailed if m.kind == "factors_changed"]
    assert "was removed on its profile page" in notice.text


# ---- the password step -----------------------------------------------------------------

async def test_the_second_step_comes_only_after_the_right_password(app, db, make_user):
    alice = await make_user(username="alice")
    await enrolled(db, app.config["GATEHOUSE"], alice["id"])
    # A wrong password: the login form's one answer (test_login.py), nothing of a second step.
    wrong = await login(app.test_client(), "alice", "not the password at all")
    assert wrong.status_code == 401 and "Wrong username, email or password." in await text(wrong)
    assert LOGIN_COOKIE not in (wrong.headers.get("Set-Cookie") or "")
    client = app.test_client()
    response = await login(client, "alice", next="/profile")
    assert response.status_code == 303 and location(response) == SECOND_STEP
    assert await session_rows(db, alice["id"]) == []
    assert not await signed_in_now(client)
    page = await text(await client.get(SECOND_STEP))
    assert "Logging in as <strong>alice</strong>" in page and 'autocomplete="one-time-code"' in page
    # Another browser (no login cookie) is sent to the login page, and so is an expired step.
    stranger = await app.test_client().get(SECOND_STEP)
    assert stranger.status_code == 303 and location(stranger) == "/login"
    await db_expire_challenges(db)
    assert location(await client.get(SECOND_STEP)) == "/login"


async def db_expire_challenges(db) -> None:
    async with db.write() as conn:
        await conn.execute(update(login_challenges).values(expires_at=utcnow()))


async def test_half_done_logins_past_their_five_minutes_are_purged(app, db, make_user):
    alice = await make_user(username="alice")
    await new_challenge(db, alice["id"])
    expired = await new_challenge(db, alice["id"])
    async with db.write() as conn:
        await conn.execute(update(login_challenges).where(login_challenges.c.id == session_id(expired))
                           .values(expires_at=utcnow()))
    removed = await maintenance.purge(db, app.config["GATEHOUSE"])
    assert removed["login_challenges"] == 1
    assert len(await rows(db, select(login_challenges.c.id))) == 1


async def test_a_password_reset_does_not_bypass_the_second_factor(app, db, make_user, mailed):
    alice = await make_user(username="alice")
    await enrolled(db, app.config["GATEHOUSE"], alice["id"])
    client = app.test_client()
    assert (await post(client, "/forgot-password", {"identifier": "alice"})).status_code == 200
    [link] = [m for m in mailed if m.kind == "reset"]
    token = re.search(r"/reset-password/([A-Za-z0-9_-]+)", link.text).group(1)
    new_password = "copper lantern meadow quietly"
    response = await post(client, f"/reset-password/{token}", {"password": new_password, "password_confirm": new_password})
    assert response.status_code == 303, (await text(response))[:500]
    assert location(response) == "/login"
    assert not await signed_in_now(client)
    response = await login(client, "alice", new_password)
    assert location(response) == SECOND_STEP and await session_rows(db, alice["id"]) == []
    assert await scalar(db, select(totp_factors.c.confirmed_at).where(totp_factors.c.user_id == alice["id"]))


# ---- policy: enrolment forced at login -------------------------------------------------

async def test_an_admin_without_a_factor_must_enrol_at_login_before_anything_else(db, database_url, make_user, mailed):
    app = create_app(make_config(database_url, require_2fa_roles=("Admin",)))
    root = await make_user("Admin", username="root")
    client = app.test_client()
    response = await login(client, "root", next="/users")
    assert response.status_code == 303 and location(response) == "/login/enrol"
    assert not await signed_in_now(client) and await session_rows(db, root["id"]) == []
    page = await text(await client.get("/login/enrol"))
    assert "<svg" in page and "Accounts with the role <strong>Admin</strong> need a second factor" in page
    secret = re.search(r'<code id="totp-secret" class="secret">([A-Z2-7 ]+)</code>', page).group(1).replace(" ", "")
    at_time(app, NOW)
    wrong = await post(client, "/login/enrol", {"code": "000000" if code_at(secret, NOW) != "000000" else "111111"})
    assert wrong.status_code == 422 and "not right" in await text(wrong)
    assert not await signed_in_now(client)
    done = await post(client, "/login/enrol", {"code": code_at(secret, NOW)})
    body = await text(done)
    assert done.status_code == 200 and 'id="recovery-codes-list"' in body and 'href="/users"' in body
    assert await signed_in_now(client)
    [event] = await audit_rows(db, "second_factor_added")
    assert event.target_id == root["id"]
    assert [m.kind for m in mailed] == ["factors_changed"]
    # The next login asks for a code, not for enrolment; the profile cannot turn it off.
    assert location(await login(app.test_client(), "root")) == SECOND_STEP
    assert (await post(client, "/profile/factors/remove", {})).status_code == 403
    await app.db.dispose()


# ---- keys ------------------------------------------------------------------------------

async def test_factor_keys_rotate_without_locking_anyone_out(db, database_url, make_user):
    """Enrolled under A; FACTOR_KEYS=B,A reads both; rekey moves the secrets to B; then B alone
    still logs the account in with its app (its recovery codes need A until replaced)."""
    alice = await make_user(username="alice")
    old = make_config(database_url, factor_keys=(KEY_A,))
    secret, recovery = await enrolled(db, old, alice["id"], at=NOW - 3 * STEP)
    both = make_config(database_url, factor_keys=(KEY_B, KEY_A))
    moment = NOW

    async def logs_in(config, code) -> int:
        app = create_app(config)
        at_time(app, moment)
        client = app.test_client()
        await half_logged_in(db, client, alice["id"])
        status = (await second_step(client, code)).status_code
        await app.db.dispose()
        return status

    assert await logs_in(both, code_at(secret, moment)) == 303
    async with db.write() as conn:
        assert await factors.rekey(conn, keyring(both)) == {"secrets": 1, "accounts_with_old_codes": 1}
    key_ids = await scalar(db, select(totp_factors.c.key_id))
    assert key_ids == keyring(both).newest_id
    moment += STEP
    assert await logs_in(make_config(database_url, factor_keys=(KEY_B,)), code_at(secret, moment)) == 303
    assert await logs_in(both, recovery[0]) == 303


# ---- run.py ----------------------------------------------------------------------------

async def test_run_py_factors_rekey_and_factors_reset(db, database_url, make_user):
    alice = await make_user("Admin", username="alice")
    config = make_config(database_url)
    await enrolled(db, config, alice["id"])
    assert await run.rekey_factors(db, config) == {"secrets": 0, "accounts_with_old_codes": 0}
    [rekeyed] = await audit_rows(db, "factors_rekeyed")
    assert (rekeyed.actor_name, rekeyed.changes) == ("run.py", {"secrets_reencrypted": [None, 0]})
    assert await run.reset_factors(db, config, "nobody") is None
    assert await run.reset_factors(db, config, "alice") is True
    assert await rows(db, select(totp_factors.c.user_id)) == []
    [event] = await audit_rows(db, "second_factors_reset")
    assert (event.actor_name, event.target_id, event.changes) == ("run.py", alice["id"], {"factors": [True, False]})
    [notice] = await mail_to(db, alice["email"], "factors_changed")
    assert "removed by run.py" in notice.text_body


async def test_rekey_without_a_key_still_in_use_changes_nothing_and_says_which(db, database_url, make_user, capsys):
    alice = await make_user(username="alice")
    await enrolled(db, make_config(database_url, factor_keys=(KEY_A,)), alice["id"])
    before = await rows(db, select(totp_factors))
    status = await asyncio.to_thread(run.cmd_factors_rekey, make_config(database_url, factor_keys=(KEY_B,)), None)
    assert status == 2
    said = capsys.readouterr().err
    assert said.startswith("Nothing re-encrypted: account #") and "put that key back in FACTOR_KEYS" in said
    assert await rows(db, select(totp_factors)) == before


@pytest.mark.sqlite_only
def test_run_py_factors_reset_from_the_command_line(database_url):
    result = run_cli("factors-reset", "--username", "nobody", database_url=database_url)
    assert result.returncode == 1 and "No account is named 'nobody'" in result.stderr


# ---- the users table and an Admin's reset ----------------------------------------------

async def test_the_users_table_shows_and_filters_who_has_a_second_factor(app, db, make_user):
    admin, client = await signed_in(app, make_user, "Admin")
    alice = await make_user(username="alice")
    await make_user(username="bob")
    await enrolled(db, app.config["GATEHOUSE"], alice["id"])
    with_factor = await text(await client.get("/users?factor=1"))
    without = await text(await client.get("/users?factor=0"))
    assert ">alice</a>" in with_factor and ">bob</a>" not in with_factor
    assert ">bob</a>" in without and ">alice</a>" not in without
    assert with_factor.count('title="Logs in with a second factor">2FA</span>') == 1
    assert '<option value="1" selected>With a second factor</option>' in with_factor


async def test_an_admin_resets_another_users_factors_audited_and_mailed(app, db, make_user, mailed):
    admin, client = await signed_in(app, make_user, "Admin")
    alice = await make_user(username="alice")
    await enrolled(db, app.config["GATEHOUSE"], alice["id"])
    page = await text(await client.get(f"/users/{alice['id']}"))
    assert f'action="/users/{alice["id"]}/factors/reset"' in page
    response = await post(client, f"/users/{alice['id']}/factors/reset", {"back": f"/users/{alice['id']}"})
    assert response.status_code == 303 and location(response) == f"/users/{alice['id']}"
    assert "logs in with the password alone" in await text(await client.get(f"/users/{alice['id']}"))
    assert await rows(db, select(totp_factors.c.user_id)) == []
    assert await rows(db, select(recovery_codes.c.id)) == []
    [event] = await audit_rows(db, "second_factors_reset")
    assert (event.actor_id, event.target_id, event.changes) == (admin["id"], alice["id"], {"factors": [True, False]})
    [notice] = [m for m in mailed if m.kind == "factors_changed"]
    assert notice.recipient == alice["email"] and f"removed by {admin['username']}" in notice.text
    own = await post(client, f"/users/{admin['id']}/factors/reset", {"back": "/users"})
    assert own.status_code == 409
