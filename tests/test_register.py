"""Registration over HTTP: the form, validation field by field, the inline check, throttling."""
import asyncio
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import update

from conftest import PASSWORD, csrf_from, make_config
from helpers import (
    audit_rows, element_text, htmx, input_value, location, post, text, user_count,
    user_named,
)
from web import create_app
from web.accounts import passwords
from web.accounts.auth import TAKEN_ANSWERS_FREE
from web.core.db import utcnow
from web.core.tables import login_throttle

GOOD = {"username": "newcomer", "email": "newcomer@example.com",
        "password": PASSWORD, "password_confirm": PASSWORD}
FIELD_IDS = ("register-username", "register-email", "register-password", "register-password-confirm")


def common_long_password() -> str | None:
    """A 15+ character entry of the app's list of common passwords."""
    for line in passwords.COMMON_LIST.read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if len(entry) >= passwords.MIN_LENGTH and "newcomer" not in entry.lower():
            return entry
    return None


async def register(client, form=None, **headers):
    return await post(client, "/register", {**GOOD, **(form or {})}, headers=headers)


# ---- the form and a successful registration --------------------------------------------

async def test_register_page_shows_a_form_with_labelled_inputs(client):
    response = await client.get("/register")
    assert response.status_code == 200
    html = await text(response)
    assert '<form id="register-form"' in html and 'action="/register"' in html
    for field_id in FIELD_IDS:
        assert f'<label for="{field_id}">' in html, field_id
        assert re.search(rf'<input id="{field_id}" name="\w+"', html), field_id
    assert csrf_from(html)


async def test_registering_creates_a_signed_in_customer_with_a_toast(client, db):
    response = await register(client)
    assert response.status_code == 303
    assert location(response) == "/dashboard"

    account = await user_named(db, "newcomer")
    assert account.role == "Customer" and account.active is True and account.deleted_at is None
    assert account.email == "newcomer@example.com"
    assert account.password_hash.startswith("$argon2id$") and PASSWORD not in account.password_hash

    dashboard = await client.get("/dashboard")
    assert dashboard.status_code == 200
    html = await text(dashboard)
    assert "Account created" in element_text(html, "toasts")
    assert "Hello, newcomer" in html


async def test_registering_by_htmx_answers_with_hx_location(client, db):
    response = await register(client, **htmx("register-form"))
    assert response.status_code == 200
    assert response.headers["HX-Location"] == "/dashboard"
    assert await user_named(db, "newcomer") is not None
    dashboard = await client.get("/dashboard")
    assert dashboard.status_code == 200
    assert "Account created" in element_text(await text(dashboard), "toasts")


async def test_registering_writes_a_register_audit_event(client, db):
    await register(client)
    account = await user_named(db, "newcomer")
    (event,) = await audit_rows(db, "register")
    assert event.actor_id == account.id and event.target_id == account.id
    assert event.target_type == "user"
    assert event.changes["username"] == [None, "newcomer"]
    assert event.changes["email"] == [None, "newcomer@example.com"]
    assert PASSWORD not in str(event.changes)


async def test_fifteen_emoji_are_a_long_enough_password(client, db):
    emoji = "🫖🌵🎻🦉🍋🚲🧭🪁🐙🎲🌋🧀🛶🪴🦔"  # 15 code points, 60 bytes in UTF-8
    response = await register(client, {"password": emoji, "password_confirm": emoji})
    assert response.status_code == 303
    account = await user_named(db, "newcomer")
    assert passwords.hasher.verify(emoji, account.password_hash)


# ---- validation ------------------------------------------------------------------------

LONG = "x" * 257
INVALID = [
    # (case, form overrides, field in error, words of the message)
    ("short username", {"username": "ab"}, "username", "3 to 32"),
    ("bad characters", {"username": "bad name!"}, "username", "letters, digits"),
    ("taken username, other case", {"username": "ALICE"}, "username", "taken"),
    ("bad email", {"email": "not-an-email"}, "email", "@-sign"),
    ("taken email, other case", {"email": "Alice@Example.com"}, "email", "already exists"),
    ("14 emoji", {"password": "😀" * 14, "password_confirm": "😀" * 14}, "password", "at least 15"),
    ("257 characters", {"password": LONG, "password_confirm": LONG}, "password", "256"),
    ("common password", "common", "password", "common"),
    ("contains the username", {"password": "my newcomer passphrase is long",
                               "password_confirm": "my newcomer passphrase is long"},
     "password", "username"),
    ("confirmation differs", {"password_confirm": PASSWORD + "!"}, "password-confirm", "differ"),
]


@pytest.mark.parametrize("case, overrides, field, words", INVALID, ids=[c[0] for c in INVALID])
async def test_invalid_registration_is_refused_next_to_the_field(client, db, make_user,
                                                                 case, overrides, field, words):
    await make_user(username="alice", email="alice@example.com")
    if overrides == "common":
        common = common_long_password()
        if common is None:
            pytest.skip("no entry of 15+ characters in common-passwords.txt")
        overrides = {"password": common, "password_confirm": common}
    form = {**GOOD, **overrides}

    response = await register(client, form)

    assert response.status_code == 422
    html = await text(response)
    message = element_text(html, f"register-{field}-error")
    assert words in message, message
    assert re.search(rf'<input id="register-{field}"[^>]*aria-invalid="true"', html)
    assert input_value(html, "username") == form["username"]
    assert input_value(html, "email") == form["email"]
    assert form["password"] not in html  # never echoed back
    assert await user_count(db) == 1  # only alice


async def test_a_too_long_password_is_refused_not_cut(client, db):
    response = await register(client, {"password": LONG, "password_confirm": LONG})
    assert response.status_code == 422
    assert "at most 256" in element_text(await text(response), "register-password-error")
    assert await user_named(db, "newcomer") is None


# ---- the inline check ------------------------------------------------------------------

async def test_inline_check_answers_only_the_targeted_fields_message(client, make_user):
    await make_user(username="alice")
    headers = htmx("register-username-error")
    response = await post(client, "/register/check", {**GOOD, "username": "Alice"}, headers=headers)
    assert response.status_code == 200
    body = await text(response)
    assert "<form" not in body and "<html" not in body and "<p" not in body
    assert body.strip() == "This username is taken. Choose another."


async def test_inline_check_of_a_free_username_answers_no_message(client):
    response = await post(client, "/register/check", {"username": "free.name"},
                          headers=htmx("register-username-error"))
    assert response.status_code == 200
    assert (await text(response)).strip() == ""


async def test_inline_check_takes_the_csrf_token_from_the_header(client):
    csrf = csrf_from(await text(await client.get("/register")))
    response = await client.post("/register/check", form={"email": "nope"},
                                 headers={**htmx("register-email-error"), "X-CSRF-Token": csrf})
    assert response.status_code == 200
    assert "@-sign" in await text(response)


# ---- mass assignment, closed registration, throttling ---------------------------------

async def test_extra_fields_cannot_make_an_admin_or_an_inactive_account(client, db):
    response = await register(client, {"role": "Admin", "active": "0", "version": "99",
                                        "deleted_at": "2020-01-01"})
    assert response.status_code == 303
    account = await user_named(db, "newcomer")
    assert account.role == "Customer"
    assert account.active is True and account.deleted_at is None and account.version == 1


async def test_closed_registration_hides_the_pages_and_the_link(db, database_url):
    app = create_app(make_config(database_url, registration_open=False))
    client = app.test_client()
    try:
        assert (await client.get("/register")).status_code == 404
        login_page = await client.get("/login")
        html = await text(login_page)
        assert 'href="/register"' not in html
        form = {**GOOD, "csrf_token": csrf_from(html)}
        assert (await client.post("/register", form=form)).status_code == 404
        assert (await client.post("/register/check", form=form)).status_code == 404
        assert 'href="/register"' not in await text(await client.get("/"))
        assert await user_count(db) == 0
    finally:
        await app.db.dispose()


async def register_many(app, count: int, ip: str = "192.0.2.7", prefix: str = "person"):
    """`count` registrations from browsers at one address; the answers."""
    answers = []
    for n in range(count):
        client = app.test_client()
        csrf = csrf_from(await text(await client.get("/register")))
        name = f"{prefix}{n}"
        answers.append(await client.post("/register", scope_base={"client": (ip, 40000 + n)}, form={
            "csrf_token": csrf, "username": name, "email": f"{name}@example.com",
            "password": PASSWORD, "password_confirm": PASSWORD}))
    return answers


async def test_eleventh_registration_from_one_address_is_throttled(app, db):
    answers = await register_many(app, 11)
    assert [a.status_code for a in answers[:10]] == [303] * 10
    assert answers[10].status_code == 429
    wait = re.search(r"Try again in (\d+) seconds", element_text(await text(answers[10]), "register-form"))
    assert wait and answers[10].headers["Retry-After"] == wait.group(1)
    assert await user_count(db) == 10
    # Another address is not affected.
    other = await register_many(app, 1, ip="198.51.100.1", prefix="elsewhere")
    assert other[0].status_code == 303


async def test_registrations_stay_capped_for_the_hour_after_the_first_lock_ends(app, db):
    await register_many(app, 10)
    # 16 seconds later: the first lock (15 s) is over, the hour is not.
    past = utcnow() - timedelta(seconds=1)
    async with db.write() as conn:
        await conn.execute(update(login_throttle).values(locked_until=past))
    (answer,) = await register_many(app, 1, prefix="later")
    assert answer.status_code == 429


async def check_username(client, username: str, ip: str):
    return await post(client, "/register/check", {**GOOD, "username": username},
                      headers=htmx("register-username-error"), scope_base={"client": (ip, 40000)})


async def test_taken_answers_from_one_address_are_throttled(app, db, make_user):
    await make_user(username="alice")
    client = app.test_client()
    for _ in range(TAKEN_ANSWERS_FREE - 1):
        answer = await check_username(client, "alice", "192.0.2.9")
        assert (await text(answer)).strip() == "This username is taken. Choose another."
    # The last free answer still says it; from then on the address waits.
    assert "taken" in await text(await check_username(client, "Alice", "192.0.2.9"))
    refused = await check_username(client, "alice", "192.0.2.9")
    assert refused.status_code == 429
    assert "taken" not in await text(refused)
    wait = refused.headers["Retry-After"]
    assert int(wait) > 0
    toast = json.loads(refused.headers["HX-Trigger"])["toast"]["items"][0]
    assert toast["level"] == "error" and f"Try again in {wait} seconds" in toast["text"]
    # A submitted form waits too, and keeps what was typed.
    submitted = await post(client, "/register", {**GOOD, "username": "alice"},
                           scope_base={"client": ("192.0.2.9", 40001)})
    assert submitted.status_code == 429 and submitted.headers["Retry-After"]
    page = await text(submitted)
    assert "Too many names and addresses checked" in element_text(page, "register-form")
    assert input_value(page, "username") == "alice" and "is taken" not in page
    assert await user_count(db) == 1
    # Another address is not affected.
    assert "taken" in await text(await check_username(client, "alice", "198.51.100.2"))


async def test_checking_free_names_is_not_throttled(client, make_user):
    await make_user(username="alice")
    for n in range(TAKEN_ANSWERS_FREE + 5):
        answer = await check_username(client, f"free.name{n}", "192.0.2.10")
        assert answer.status_code == 200 and (await text(answer)).strip() == ""
        # Checking another field says nothing about the taken username beside it.
        answer = await post(client, "/register/check", {**GOOD, "username": "alice", "email": f"e{n}"},
                            headers=htmx("register-email-error"), scope_base={"client": ("192.0.2.10", 40000)})
        assert answer.status_code == 200 and "taken" not in await text(answer)


# ---- escaping --------------------------------------------------------------------------

async def test_a_login_identifier_with_markup_comes_back_escaped(client):
    script = "<script>alert(1)</script>"
    response = await post(client, "/login", {"identifier": script, "password": "whatever it is"})
    assert response.status_code == 401
    html = await text(response)
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in html
    assert script not in html
    assert input_value(html, "identifier") == script


# ---- two people at once ----------------------------------------------------------------

async def test_two_simultaneous_registrations_of_one_name_give_one_account_and_one_422(app, db):
    """Both pass the 'taken?' check before either has inserted: the database's unique
    index decides, and the loser must get the form back, not an error page."""

    async def attempt(n):
        client = app.test_client()
        csrf = csrf_from(await text(await client.get("/register")))
        return await client.post("/register", form={
            **GOOD, "email": f"twin{n}@example.com", "username": "twin", "csrf_token": csrf})

    answers = await asyncio.gather(attempt(1), attempt(2))
    assert sorted(a.status_code for a in answers) == [303, 422]
    assert await user_count(db) == 1
