"""Passkeys over HTTP, with a software authenticator (tests/soft_authenticator.py): adding,
naming and removing them; signing in without a password; the server's checks (single-use
challenges, origin and relying party, user verification, the sign counter, whose passkey it is)."""
import json

import pytest
from sqlalchemy import select, update

from helpers import audit_rows, htmx, location, login, open_session, rows, session_rows, text, token
from soft_authenticator import SoftAuthenticator, allowed_ids
from web.accounts import maintenance, passkeys as passkey_queries
from web.core.db import utcnow
from web.core.tables import passkey_challenges, passkeys, users

NOT_SIGNED_IN = "That passkey did not sign you in."


async def options(client, path: str, **form) -> dict:
    csrf = await token(client)
    response = await client.post(path, form={"csrf_token": csrf, **form}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200, await text(response)
    assert response.headers["Content-Type"] == "application/json"
    return json.loads(await text(response))


async def add_passkey(client, authenticator, name: str = "", **lies):
    """The profile's "Add a passkey", as passkeys.js does it: options, the authenticator, the form."""
    created = authenticator.create(await options(client, "/profile/passkeys/options", name=name), **lies)
    return await client.post("/profile/passkeys", form={"csrf_token": await token(client), "name": name,
                                                         "credential": created},
                             headers=htmx("profile-passkeys"))


async def sign_in(app, authenticator, client=None, **lies):
    """"Sign in with a passkey" on the login page, in a browser with no session."""
    client = client or app.test_client()
    answer = authenticator.get(await options(client, "/login/passkey/options"), **lies)
    return client, await send_answer(client, answer)


async def send_answer(client, answer: str, next_path: str = ""):
    return await client.post("/login/passkey", form={"csrf_token": await token(client), "credential": answer,
                                                     "next": next_path})


async def with_passkey(app, make_user, **authenticator):
    """An account with one passkey, and its authenticator."""
    account = await make_user(username="alice")
    client = app.test_client()
    await open_session(app, client, account["id"])
    key = SoftAuthenticator(**authenticator)
    response = await add_passkey(client, key, "Laptop")
    assert response.status_code == 200, await text(response)
    return account, key


async def assert_refused(response):
    assert response.status_code == 401
    assert NOT_SIGNED_IN in await text(response)


# ---- the profile -----------------------------------------------------------------------

async def test_a_passkey_added_in_the_profile_is_listed_audited_and_mailed(app, db, make_user, mailed):
    account, key = await with_passkey(app, make_user)
    [row] = await rows(db, select(passkeys))
    assert (row.user_id, row.name, row.credential_id, row.sign_count, row.transports) == \
        (account["id"], "Laptop", key.id, 0, ["internal"])
    [event] = await audit_rows(db, "passkey_add")
    assert event.target_id == account["id"] and event.changes == {"passkey": [None, "Laptop"]}
    assert [m.kind for m in mailed] == ["passkey_added"] and "Laptop" in mailed[0].text
    assert await rows(db, select(passkey_challenges)) == []  # used up


@pytest.mark.sqlite_only  # the database plays no part in this check
async def test_registration_options_ask_for_a_discoverable_verified_passkey_and_exclude_those_held(
        app, make_user):
    account, key = await with_passkey(app, make_user)
    client = app.test_client()
    await open_session(app, client, account["id"])
    offered = await options(client, "/profile/passkeys/options")
    assert offered["rp"] == {"name": "Gatehouse", "id": "localhost"}
    assert offered["attestation"] == "none"
    assert offered["authenticatorSelection"]["residentKey"] == "required"
    assert offered["authenticatorSelection"]["userVerification"] == "required"
    assert [c["id"] for c in offered["excludeCredentials"]] == [key.id]
    assert offered["user"]["id"] == key.user_handle  # one handle for all of an account's passkeys


async def test_a_second_passkey_gets_a_default_name_and_a_bad_name_is_refused_beside_its_field(app, db, make_user):
    account, _ = await with_passkey(app, make_user)
    client = app.test_client()
    await open_session(app, client, account["id"])
    assert (await add_passkey(client, SoftAuthenticator())).status_code == 200
    assert [r.name for r in await rows(db, select(passkeys).order_by(passkeys.c.id))] == ["Laptop", "Passkey 2"]
    csrf = await token(client)
    response = await client.post("/profile/passkeys/options", form={"csrf_token": csrf, "name": "x" * 65},
                                 headers={"X-CSRF-Token": csrf})
    assert response.status_code == 422
    assert json.loads(await text(response)) == {"error": "Use at most 64 characters.", "field": "name"}


@pytest.mark.sqlite_only  # the database plays no part in this check
async def test_without_javascript_the_add_form_says_it_needs_it(app, make_user):
    _, client = await signed_in_customer(app, make_user)
    response = await client.post("/profile/passkeys", form={"csrf_token": await token(client), "name": "Phone"})
    assert response.status_code == 422
    assert "Adding a passkey needs JavaScript" in await text(response)


async def signed_in_customer(app, make_user):
    account = await make_user()
    client = app.test_client()
    await open_session(app, client, account["id"])
    return account, client


async def test_rename_and_remove_are_audited_and_touch_only_ones_own_passkeys(app, db, make_user):
    account, _ = await with_passkey(app, make_user)
    [row] = await rows(db, select(passkeys))
    owner = app.test_client()
    await open_session(app, owner, account["id"])
    _, stranger = await signed_in_customer(app, make_user)

    response = await stranger.post(f"/profile/passkeys/{row.id}/rename", form={"csrf_token": await token(stranger),
                                                                                "name": "Mine now"})
    assert response.status_code == 200 and "removed meanwhile" in await text(response)  # its toast
    response = await stranger.post(f"/profile/passkeys/{row.id}/remove", form={"csrf_token": await token(stranger)})
    assert response.status_code == 200
    assert (await rows(db, select(passkeys.c.name)))[0].name == "Laptop"

    response = await owner.post(f"/profile/passkeys/{row.id}/rename",
                                form={"csrf_token": await token(owner), "name": " "}, headers=htmx("profile-passkeys"))
    assert response.status_code == 422
    error = f'id="passkey-{row.id}-name-error" class="error" role="alert">Give the passkey a name.'
    assert error in await text(response)
    response = await owner.post(f"/profile/passkeys/{row.id}/rename", form={"csrf_token": await token(owner),
                                                                            "name": "Work laptop"},
                                headers=htmx("profile-passkeys"))
    assert response.status_code == 200 and 'value="Work laptop"' in await text(response)
    assert [e.changes for e in await audit_rows(db, "passkey_rename")] == [{"passkey": ["Laptop", "Work laptop"]}]

    response = await owner.post(f"/profile/passkeys/{row.id}/remove", form={"csrf_token": await token(owner)},
                                headers=htmx("profile-passkeys"))
    assert response.status_code == 200 and "You have no passkeys yet." in await text(response)
    assert await rows(db, select(passkeys)) == []
    assert [e.changes for e in await audit_rows(db, "passkey_remove")] == [{"passkey": ["Work laptop", None]}]


@pytest.mark.sqlite_only  # the database plays no part in this check
async def test_a_registration_without_user_verification_or_from_another_origin_is_refused(app, db, make_user):
    _, client = await signed_in_customer(app, make_user)
    for lie in ({"verified": False}, {"origin": "https://gatehouse.example.net"}, {"rp_id": "example.net"}):
        response = await add_passkey(client, SoftAuthenticator(), **lie)
        assert response.status_code == 422, lie
        assert "could not be verified" in await text(response)
    assert await rows(db, select(passkeys)) == []


# ---- signing in without a password -----------------------------------------------------

async def test_a_passkey_signs_in_without_a_password(app, db, make_user):
    account, key = await with_passkey(app, make_user)
    client = app.test_client()
    offered = await options(client, "/login/passkey/options")
    assert offered["rpId"] == "localhost" and offered["userVerification"] == "required"
    assert allowed_ids(offered) == []  # the authenticator chooses: nothing tells which accounts exist
    response = await send_answer(client, key.get(offered), "/profile")
    assert response.status_code == 303 and location(response) == "/profile"
    assert len(await session_rows(db, account["id"])) == 2  # the one that added it, and this one
    [row] = await rows(db, select(passkeys))
    assert row.sign_count == 1 and row.last_used_at is not None
    [event] = await audit_rows(db, "login")
    assert event.target_id == account["id"] and event.changes == {"factor": [None, "passkey"]}


async def test_a_challenge_answers_once(app, db, make_user):
    _, key = await with_passkey(app, make_user)
    client = app.test_client()
    answer = key.get(await options(client, "/login/passkey/options"))
    assert (await send_answer(client, answer)).status_code == 303
    await assert_refused(await send_answer(app.test_client(), answer))
    [failed] = await audit_rows(db, "login_failed")
    assert failed.changes["problem"] == [None, "unknown, used or expired challenge"]


async def test_an_expired_challenge_is_refused(app, db, make_user):
    _, key = await with_passkey(app, make_user)
    client = app.test_client()
    answer = key.get(await options(client, "/login/passkey/options"))
    async with db.write() as conn:
        await conn.execute(update(passkey_challenges).values(expires_at=utcnow()))
    await assert_refused(await send_answer(client, answer))


@pytest.mark.sqlite_only  # the database plays no part in this check
async def test_another_origin_or_relying_party_is_refused(app, db, make_user):
    _, key = await with_passkey(app, make_user)
    for lie in ({"origin": "http://localhost:8001"}, {"origin": "https://gatehouse.example.net"},
                {"rp_id": "example.net"}):
        _, response = await sign_in(app, key, **lie)
        await assert_refused(response)
    problems = [e.changes["problem"][1] for e in await audit_rows(db, "login_failed")]
    assert [p.split(" ")[0] for p in problems] == ["Unexpected", "Unexpected", "Unexpected"]
    assert "RP ID" in problems[2]


@pytest.mark.sqlite_only  # the database plays no part in this check
async def test_a_sign_in_without_user_verification_is_refused(app, make_user):
    _, key = await with_passkey(app, make_user)
    _, response = await sign_in(app, key, verified=False)
    await assert_refused(response)


async def test_a_sign_count_that_does_not_move_on_is_refused(app, db, make_user):
    _, key = await with_passkey(app, make_user)
    assert (await sign_in(app, key))[1].status_code == 303  # count 1
    assert (await sign_in(app, key, sign_count=5))[1].status_code == 303
    for stale in (5, 4, 0):  # a cloned authenticator's count lags behind
        await assert_refused((await sign_in(app, key, sign_count=stale))[1])
    assert (await rows(db, select(passkeys.c.sign_count)))[0].sign_count == 5


async def test_a_counter_that_stays_zero_is_accepted(app, db, make_user):
    _, key = await with_passkey(app, make_user, counts=False)
    for _ in range(2):
        assert (await sign_in(app, key))[1].status_code == 303
    assert (await rows(db, select(passkeys.c.sign_count)))[0].sign_count == 0


@pytest.mark.sqlite_only  # the database plays no part in this check
async def test_an_unknown_passkey_or_a_forged_signature_is_refused(app, make_user):
    _, key = await with_passkey(app, make_user)
    stranger = SoftAuthenticator()
    stranger.user_handle = key.user_handle
    await assert_refused((await sign_in(app, stranger))[1])
    forger = SoftAuthenticator()
    forger.credential_id, forger.user_handle = key.credential_id, key.user_handle  # its key, not theirs
    await assert_refused((await sign_in(app, forger))[1])
    client = app.test_client()
    await assert_refused(await send_answer(client, "{not json"))


async def test_accounts_the_password_login_refuses_are_refused_alike(app, db, make_user):
    account, key = await with_passkey(app, make_user)
    for change, undo in (({"active": False}, {"active": True}), ({"deleted_at": utcnow()}, {"deleted_at": None}),
                         ({"invited_at": utcnow()}, {"invited_at": None})):
        async with db.write() as conn:
            await conn.execute(update(users).where(users.c.id == account["id"]).values(**change))
        await assert_refused((await sign_in(app, key))[1])
        async with db.write() as conn:
            await conn.execute(update(users).where(users.c.id == account["id"]).values(**undo))
    assert (await sign_in(app, key))[1].status_code == 303


async def test_failed_passkey_sign_ins_count_toward_the_login_throttle(app, make_user):
    _, key = await with_passkey(app, make_user)
    client = app.test_client()
    for _ in range(app.config["GATEHOUSE"].throttle_free_failures):
        await assert_refused((await sign_in(app, key, client=client, verified=False))[1])
    _, response = await sign_in(app, key, client=client)  # right, but the account is locked now
    assert response.status_code == 429 and "Try again in" in await text(response)
    assert int(response.headers["Retry-After"]) > 0


@pytest.mark.sqlite_only  # the database plays no part in this check
async def test_a_refused_sign_in_by_htmx_answers_with_the_passkey_form_and_its_error(app, make_user):
    _, key = await with_passkey(app, make_user)
    client = app.test_client()
    answer = key.get(await options(client, "/login/passkey/options"), verified=False)
    response = await client.post("/login/passkey", form={"csrf_token": await token(client), "credential": answer},
                                 headers=htmx("passkey-sign-in"))
    body = await text(response)
    assert response.status_code == 401 and body.lstrip().startswith('<form id="passkey-sign-in"')
    assert NOT_SIGNED_IN in body and "autofocus" in body


async def test_expired_challenges_are_purged(app, db, make_user):
    client = app.test_client()
    await options(client, "/login/passkey/options")
    await options(client, "/login/passkey/options")
    async with db.write() as conn:
        await conn.execute(update(passkey_challenges).values(expires_at=utcnow()))
    await options(client, "/login/passkey/options")
    removed = await maintenance.purge(db, app.config["GATEHOUSE"])
    assert removed["passkey_challenges"] == 2
    assert len(await rows(db, select(passkey_challenges))) == 1


# ---- the login's second step -----------------------------------------------------------

async def test_after_the_password_a_passkey_of_the_account_and_no_other_completes_the_login(app, db, make_user):
    alice, key = await with_passkey(app, make_user)
    bob = await make_user(username="bob")
    bobs_client = app.test_client()
    await open_session(app, bobs_client, bob["id"])
    bobs_key = SoftAuthenticator()
    assert (await add_passkey(bobs_client, bobs_key)).status_code == 200

    client = app.test_client()
    response = await login(client, "alice")
    assert response.status_code == 303 and location(response) == "/login/second-step"
    assert "Use a passkey" in await text(await client.get("/login/second-step"))
    offered = await options(client, "/login/second-step/passkey/options")
    assert allowed_ids(offered) == [key.id]
    response = await client.post("/login/second-step/passkey", form={
        "csrf_token": await token(client), "credential": bobs_key.get(offered)}, headers=htmx("passkey-sign-in"))
    body = await text(response)
    assert response.status_code == 401 and "That passkey did not work." in body
    assert 'action="/login/second-step/passkey"' in body and "Use a passkey" in body

    answer = key.get(await options(client, "/login/second-step/passkey/options"))
    response = await client.post("/login/second-step/passkey", form={"csrf_token": await token(client),
                                                                     "credential": answer})
    assert response.status_code == 303 and location(response) == "/dashboard"
    [event] = await audit_rows(db, "login")
    assert event.target_id == alice["id"] and event.changes == {"factor": [None, "passkey"]}
    [failed] = await audit_rows(db, "second_factor_failed")
    assert failed.changes["problem"] == [None, "not a passkey of this account"]


@pytest.mark.sqlite_only  # the database plays no part in this check
async def test_a_base_url_naming_an_ip_address_turns_passkeys_off(db, migrated_url, make_user):
    """An IP address cannot be a WebAuthn relying party id: nothing offers a passkey then."""
    from conftest import make_config
    from web import create_app
    app = create_app(make_config(migrated_url, base_url="http://127.0.0.1:8000"))
    client = app.test_client()
    assert 'data-passkey="get"' not in await text(await client.get("/login"))
    csrf = await token(client)
    response = await client.post("/login/passkey/options", form={"csrf_token": csrf}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 404
    _, signed_in_client = await signed_in_customer(app, make_user)
    html = await text(await signed_in_client.get("/profile"))
    assert "Passkeys are off" in html and 'data-passkey="create"' not in html
    await app.db.dispose()


async def test_an_account_keeps_only_its_newest_few_challenges_per_purpose(db, make_user):
    alice, bob = await make_user(username="alice"), await make_user(username="bob")
    async with db.write() as conn:
        await passkey_queries.store_challenge(conn, b"bob's", "register", bob["id"])
        for n in range(12):
            await passkey_queries.store_challenge(conn, f"challenge {n}".encode(), "register", alice["id"])
        await passkey_queries.store_challenge(conn, b"another purpose", "reauthenticate", alice["id"])
    kept = await rows(db, select(passkey_challenges.c.id, passkey_challenges.c.user_id, passkey_challenges.c.purpose))
    alices = [row.id for row in kept if row.user_id == alice["id"] and row.purpose == "register"]
    assert len(alices) == passkey_queries.LIVE_CHALLENGES
    assert passkey_queries.challenge_id(b"challenge 11") in alices
    assert passkey_queries.challenge_id(b"bob's") in {row.id for row in kept}
    assert passkey_queries.challenge_id(b"another purpose") in {row.id for row in kept}
