"""Changing one's address: a link to the new address (the change waits for it), a notice to
the old one with a way to report it, the same answer whether or not the address is taken,
and the report that puts things back. In-process against the outbox table, then over HTTP
with the real SMTP server on both databases."""
import re
import secrets
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from conftest import PASSWORD
from helpers import (
    audit_rows, element_text, htmx, location, mail_to, mailbox_address, mailed_path, mailed_url, normalised,
    open_session, post, posted, rows, sent_once, session_rows, text, toasts, user_row,
)
from web.accounts import confirmation, queries
from web.core.db import utcnow
from web.core.tables import account_tokens, outbox

SENT = "Your address changes when you open it."
TAKEN = "This address belongs to another account"
INVALID = "This link is invalid or has expired"


async def ask(client, email: str, password: str = PASSWORD, **kwargs):
    return await post(client, "/profile/email", {"email": email, "current_password": password}, **kwargs)


def change_link(mailed: list, address: str, nth: int = -1) -> str:
    return mailed_path(mailed, address, "email_change", "/confirm-email-change/", nth)


def report_link(mailed: list, address: str, kind: str = "email_change_requested", nth: int = -1) -> str:
    return mailed_path(mailed, address, kind, "/report-email-change/", nth)


async def signed_in(app, make_user, username: str = "alice", **kwargs):
    account = await make_user(username=username, **kwargs)
    client = app.test_client()
    await open_session(app, client, account["id"])
    return account, client


def anonymised(body: str, *addresses: str) -> str:
    """A page or message with the addresses, times, links' tokens and CSRF tokens taken out:
    what is left must not differ between a free and a taken address."""
    for address in addresses:
        body = re.sub(re.escape(address), "ADDRESS", body, flags=re.IGNORECASE)
    body = re.sub(r"<time[^>]*>[^<]*</time>", "TIME", body)
    body = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "WHEN", body)
    body = re.sub(r"(/report-email-change/)[A-Za-z0-9_-]+", r"\1TOKEN", body)
    # How many events the audit trail holds, anyone's (both requests write one): where the
    # page's live stream starts.
    body = re.sub(r'data-live-after="\d+"', 'data-live-after="N"', body)
    return normalised(body)


# ---- asking ------------------------------------------------------------------------------

async def test_asking_mails_a_link_to_the_new_address_and_a_notice_to_the_old(app, db, make_user):
    alice, client = await signed_in(app, make_user)
    response = await ask(client, "alice.new@example.com")
    html = await text(response)
    assert response.status_code == 200
    assert element_text(html, "profile-email-sent") == f"We sent a confirmation link to alice.new@example.com. {SENT}"
    assert "Waiting for confirmation of alice.new@example.com" in element_text(html, "profile-email-pending")
    assert 'action="/profile/email/cancel"' in html
    assert (await user_row(db, alice["id"])).email == "alice@example.com"

    [link] = await mail_to(db, "alice.new@example.com", "email_change")
    assert link.subject == "Confirm your new email address · Gatehouse"
    assert "24 hours" in link.text_body and "/confirm-email-change/" in link.text_body
    [notice] = await mail_to(db, "alice@example.com", "email_change_requested")
    assert "alice.new@example.com" in notice.text_body
    assert "http://localhost:8000/report-email-change/" in notice.text_body
    assert "http://localhost:8000/forgot-password" in notice.text_body
    assert "7 days" in notice.text_body and "UTC" in notice.text_body
    [event] = await audit_rows(db, "email_change_requested")
    assert (event.actor_id, event.target_id) == (alice["id"], alice["id"])
    assert event.changes == {"requested_email": [None, "alice.new@example.com"]}


async def test_a_taken_address_gets_the_same_answer_and_leaves_the_same_traces(mailed, app, db, make_user):
    await make_user(username="bob", email="bob@example.com")
    alice, client = await signed_in(app, make_user)
    answers, pages = [], []
    for address in ("bob@example.com", "free@example.com"):
        response = await ask(client, address.upper(), headers=htmx("profile-email-form"))
        answers.append((response.status_code, anonymised(await text(response), address),
                        [anonymised(t["text"], address) for t in toasts(response)]))
        pages.append(anonymised(await text(await client.get("/profile")), address))
    assert answers[0] == answers[1] and answers[0][0] == 200
    assert pages[0] == pages[1]
    first, second = [m for m in mailed if m.kind == "email_change_requested"]
    assert first.recipient == second.recipient == "alice@example.com"
    assert anonymised(first.text, "bob@example.com") == anonymised(second.text, "free@example.com")
    assert anonymised(first.html, "bob@example.com") == anonymised(second.html, "free@example.com")
    assert first.subject == second.subject
    # The owner of the taken address hears why nothing comes; no link is sent anywhere for it.
    links = await rows(db, select(outbox.c.recipient).where(outbox.c.kind == "email_change"))
    assert [row.recipient for row in links] == ["FREE@example.com"]
    [note] = await mail_to(db, "bob@example.com", "email_change_taken")  # to the account's own address
    assert "already belongs to a Gatehouse account" in note.text_body.replace("\n", " ")
    assert "alice" not in note.text_body and "/confirm-email-change/" not in note.text_body


async def test_the_same_address_sends_nothing(app, db, make_user):
    alice, client = await signed_in(app, make_user)
    response = await ask(client, "alice@example.com", headers=htmx("profile-email-form"))
    assert response.status_code == 200
    assert toasts(response, "warning")[0]["text"] == "That is already your email address."
    assert await rows(db, select(outbox)) == [] and await rows(db, select(account_tokens)) == []


async def test_asking_is_limited_per_account_taken_address_or_not(app, db, make_user):
    await make_user(username="bob", email="bob@example.com")
    alice, client = await signed_in(app, make_user)
    for n in range(confirmation.CHANGES_PER_ACCOUNT):
        assert (await ask(client, f"new{n}@example.com")).status_code == 200
    for address in ("bob@example.com", "another@example.com"):
        response = await ask(client, address)
        assert response.status_code == 429
        assert confirmation.CHANGES_LIMITED in element_text(await text(response), "profile-email-error")
    assert len(await mail_to(db, "alice@example.com", "email_change_requested")) == confirmation.CHANGES_PER_ACCOUNT


async def test_asking_is_limited_per_new_address_across_accounts(app, db, make_user):
    for n in range(confirmation.CHANGES_PER_ADDRESS + 1):
        _, client = await signed_in(app, make_user, username=f"user{n}")
        response = await ask(client, "wanted@example.com")
    assert response.status_code == 429
    assert len(await mail_to(db, "wanted@example.com", "email_change")) == confirmation.CHANGES_PER_ADDRESS


async def test_a_newer_request_replaces_the_link(mailed, app, client, db, make_user):
    alice, client = await signed_in(app, make_user)
    await ask(client, "first@example.com")
    first = change_link(mailed, "first@example.com")
    await ask(client, "second@example.com")
    assert (await client.get(first)).status_code == 410
    assert (await client.get(change_link(mailed, "second@example.com"))).status_code == 200
    assert "second@example.com" in element_text(await text(await client.get("/profile")), "profile-email-pending")


async def test_cancelling_the_pending_change_kills_its_link(mailed, app, db, make_user):
    alice, client = await signed_in(app, make_user)
    await ask(client, "alice.new@example.com")
    link = change_link(mailed, "alice.new@example.com")
    response = await post(client, "/profile/email/cancel", headers=htmx("profile-email-form"))
    html = await text(response)
    assert response.status_code == 200 and 'id="profile-email-pending"' not in html
    assert toasts(response)[0]["text"] == "The change of address is cancelled."
    assert (await client.get(link)).status_code == 410
    [event] = await audit_rows(db, "email_change_cancelled")
    assert event.target_id == alice["id"]
    again = await post(client, "/profile/email/cancel", headers=htmx("profile-email-form"))
    assert toasts(again, "warning")[0]["text"] == "No change of address was waiting."
    assert len(await audit_rows(db, "email_change_cancelled")) == 1


async def test_an_expired_change_is_no_longer_shown_nor_confirmed(mailed, app, db, make_user):
    alice, client = await signed_in(app, make_user)
    await ask(client, "alice.new@example.com")
    async with db.write() as conn:  # the clock moved past its day
        await conn.execute(update(account_tokens).where(account_tokens.c.purpose == "email")
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert 'id="profile-email-pending"' not in await text(await client.get("/profile"))
    link = change_link(mailed, "alice.new@example.com")
    assert (await client.get(link)).status_code == 410
    assert (await post(client, link)).status_code == 410


# ---- confirming --------------------------------------------------------------------------

async def test_opening_the_link_shows_a_button_and_changes_nothing(mailed, app, db, make_user):
    alice, client = await signed_in(app, make_user)
    await ask(client, "alice.new@example.com")
    link = change_link(mailed, "alice.new@example.com")
    for _ in range(2):
        response = await app.test_client().get(link)
        html = await text(response)
        assert response.status_code == 200
        assert f'action="{link}"' in html and "Confirm alice.new@example.com</button>" in html
    assert (await user_row(db, alice["id"])).email == "alice@example.com"


async def test_confirming_moves_the_address_audits_and_tells_the_old_one(mailed, app, db, make_user):
    alice, client = await signed_in(app, make_user)
    await ask(client, "alice.new@example.com")
    response = await post(client, change_link(mailed, "alice.new@example.com"))
    assert response.status_code == 303 and location(response) == "/profile"
    account = await user_row(db, alice["id"])
    assert account.email == "alice.new@example.com" and account.email_confirmed_at is not None
    [event] = await audit_rows(db, "update")
    assert event.changes == {"email": ["alice@example.com", "alice.new@example.com"]}
    [notice] = await mail_to(db, "alice@example.com", "email_changed")
    assert notice.subject == "Your email address was changed · Gatehouse"
    assert "from alice@example.com to\nalice.new@example.com" in notice.text_body
    assert "/report-email-change/" in notice.text_body
    html = await text(await client.get("/profile"))
    assert "alice.new@example.com" in element_text(html, "profile-account")
    assert 'id="profile-email-pending"' not in html


async def test_confirming_from_another_browser_goes_to_the_login_page(mailed, app, db, make_user):
    alice, client = await signed_in(app, make_user)
    await ask(client, "alice.new@example.com")
    response = await post(app.test_client(), change_link(mailed, "alice.new@example.com"))
    assert response.status_code == 303 and location(response) == "/login"
    assert (await user_row(db, alice["id"])).email == "alice.new@example.com"


async def test_an_address_taken_between_asking_and_confirming_is_refused_clearly(mailed, app, db, make_user):
    alice, client = await signed_in(app, make_user)
    await ask(client, "wanted@example.com")
    await make_user(username="quick", email="wanted@example.com")
    link = change_link(mailed, "wanted@example.com")
    response = await post(client, link)
    html = await text(response)
    assert response.status_code == 409 and TAKEN in html and 'href="/profile"' in html
    assert (await user_row(db, alice["id"])).email == "alice@example.com"
    assert await audit_rows(db, "update") == [] and await mail_to(db, "alice@example.com", "email_changed") == []
    assert (await client.get(link)).status_code == 410, "used up"


async def test_a_unique_violation_at_the_write_is_the_same_refusal(mailed, app, db, make_user, monkeypatch):
    """The check and the write are in one transaction, but on PostgreSQL another transaction
    may commit the address between them: the unique index refuses it, never a 500."""
    alice, client = await signed_in(app, make_user)
    await ask(client, "wanted@example.com")
    await make_user(username="quick", email="wanted@example.com")

    async def not_taken(conn, email, except_id=None):
        return False
    monkeypatch.setattr(queries, "email_taken", not_taken)
    link = change_link(mailed, "wanted@example.com")
    response = await post(client, link)
    assert response.status_code == 409 and TAKEN in await text(response)
    assert (await user_row(db, alice["id"])).email == "alice@example.com"
    assert (await client.get(link)).status_code == 200, "rolled back: the link still works"


async def test_two_confirmations_of_one_link_make_one_change(mailed, app, db, make_user):
    alice, client = await signed_in(app, make_user)
    await ask(client, "alice.new@example.com")
    link = change_link(mailed, "alice.new@example.com")
    assert (await post(client, link)).status_code == 303
    assert (await post(client, link)).status_code == 410
    assert len(await audit_rows(db, "update")) == 1


# ---- reporting ---------------------------------------------------------------------------

async def test_opening_the_report_link_shows_a_button_and_does_nothing(mailed, app, db, make_user):
    alice, client = await signed_in(app, make_user)
    await ask(client, "alice.new@example.com")
    link = report_link(mailed, "alice@example.com")
    response = await app.test_client().get(link)
    html = await text(response)
    assert response.status_code == 200 and "It was not me: secure my account</button>" in html
    assert len(await session_rows(db, alice["id"])) == 1
    assert (await client.get(change_link(mailed, "alice.new@example.com"))).status_code == 200


async def test_a_report_before_the_change_cancels_it_and_ends_every_session(mailed, app, db, make_user):
    alice, client = await signed_in(app, make_user)
    await open_session(app, app.test_client(), alice["id"])
    await ask(client, "thief@example.com")
    response = await post(app.test_client(), report_link(mailed, "alice@example.com"))
    html = await text(response)
    assert response.status_code == 200 and "Your account is secured" in html
    assert 'href="/forgot-password"' in html
    assert await session_rows(db, alice["id"]) == []
    assert (await app.test_client().get(change_link(mailed, "thief@example.com"))).status_code == 410
    assert (await user_row(db, alice["id"])).email == "alice@example.com"
    [event] = await audit_rows(db, "email_change_reported")
    assert event.changes == {"sessions_ended": [None, 2]} and event.target_id == alice["id"]


async def test_a_report_after_the_change_puts_the_old_address_back(mailed, app, db, make_user):
    alice, thief = await signed_in(app, make_user)
    await ask(thief, "thief@example.com")
    await post(thief, change_link(mailed, "thief@example.com"))
    assert (await user_row(db, alice["id"])).email == "thief@example.com"
    # Whoever moved the address asks for another change: its notice (and report link) goes to
    # their own address, and the old address's link lives on.
    await ask(thief, "thief.two@example.com")
    response = await post(app.test_client(), report_link(mailed, "alice@example.com"))
    html = await text(response)
    assert response.status_code == 200 and "Its email address is alice@example.com again." in html
    account = await user_row(db, alice["id"])
    assert account.email == "alice@example.com" and account.email_confirmed_at is not None
    [event] = await audit_rows(db, "email_change_reported")
    assert event.changes["email"] == ["thief@example.com", "alice@example.com"]
    [told] = await mail_to(db, "thief@example.com", "email_changed")
    assert "set back from thief@example.com to\nalice@example.com" in told.text_body
    assert "/report-email-change/" not in told.text_body
    assert await session_rows(db, alice["id"]) == []
    # Every other link of the account died with the report: the pending change and the
    # report link sent to the thief's address.
    assert (await thief.get("/dashboard")).status_code == 302, "logged out"
    assert (await app.test_client().get(change_link(mailed, "thief.two@example.com"))).status_code == 410
    assert (await app.test_client().get(report_link(mailed, "thief@example.com"))).status_code == 410


async def test_the_changed_notice_carries_a_report_link_of_its_own(mailed, app, db, make_user):
    alice, client = await signed_in(app, make_user)
    await ask(client, "thief@example.com")
    await post(client, change_link(mailed, "thief@example.com"))
    response = await post(app.test_client(), report_link(mailed, "alice@example.com", "email_changed"))
    assert response.status_code == 200
    assert (await user_row(db, alice["id"])).email == "alice@example.com"


async def test_reporting_from_the_accounts_own_session_logs_this_browser_out(mailed, app, db, make_user):
    alice, client = await signed_in(app, make_user)
    await ask(client, "alice.new@example.com")
    response = await post(client, report_link(mailed, "alice@example.com"))
    assert response.status_code == 200 and "Signed in as" not in await text(response)
    assert (await client.get("/dashboard")).status_code == 302


@pytest.mark.parametrize("spoil", ["used", "expired", "admin changed the address", "unknown"])
async def test_a_report_link_that_does_not_work_answers_one_page(mailed, app, db, make_user, spoil):
    alice, client = await signed_in(app, make_user)
    await ask(client, "alice.new@example.com")
    link = report_link(mailed, "alice@example.com")
    if spoil == "used":
        assert (await post(app.test_client(), link)).status_code == 200
    elif spoil == "expired":  # the clock moved past its seven days
        async with db.write() as conn:
            await conn.execute(update(account_tokens).where(account_tokens.c.purpose == "report")
                               .values(expires_at=utcnow() - timedelta(seconds=1)))
    elif spoil == "admin changed the address":  # set, not confirmed by a link: not what was warned of
        async with db.write() as conn:
            await queries.update_user(conn, alice["id"], {"email": "fixed@example.com"})
    else:
        link = "/report-email-change/" + secrets.token_urlsafe(32)
    sessions_before = len(await session_rows(db, alice["id"]))
    for response in (await app.test_client().get(link), await post(app.test_client(), link)):
        body = await text(response)
        assert response.status_code == 410 and INVALID in body and 'href="/forgot-password"' in body
    assert len(await session_rows(db, alice["id"])) == sessions_before


async def test_a_report_when_the_old_address_was_taken_meanwhile_still_secures_the_account(mailed, app, db, make_user):
    alice, client = await signed_in(app, make_user)
    await ask(client, "thief@example.com")
    await post(client, change_link(mailed, "thief@example.com"))
    await make_user(username="squatter", email="alice@example.com")
    response = await post(app.test_client(), report_link(mailed, "alice@example.com"))
    html = await text(response)
    assert response.status_code == 200 and "could not be put back" in html
    assert (await user_row(db, alice["id"])).email == "thief@example.com"
    assert await session_rows(db, alice["id"]) == []


# ---- over HTTP: the real server, the real SMTP server ------------------------------------

async def test_changing_the_address_over_http_with_each_message_sent_once(mail_server, db, make_user):
    old, new = mailbox_address("old"), mailbox_address("new")
    account = await make_user(username="http.change", email=old)
    async with httpx.AsyncClient(base_url=mail_server.url, timeout=30) as http:
        assert (await posted(http, "/login", {"identifier": old, "password": PASSWORD})).status_code == 303
        asked = await posted(http, "/profile/email", {"email": new, "current_password": PASSWORD}, page="/profile")
        assert asked.status_code == 200 and SENT in asked.text
        message = await mail_server.mailbox.next_to(new)
        assert message["Subject"] == "Confirm your new email address · Gatehouse"
        url = mailed_url(message, "confirm-email-change")
        assert url.startswith(mail_server.url + "/confirm-email-change/")
        path = url.removeprefix(mail_server.url)
        done = await posted(http, path, {})
        assert done.status_code == 303 and done.headers["Location"] == "/profile"
        assert new in (await http.get("/profile")).text
    notices = [await mail_server.mailbox.next_to(old, n) for n in (1, 2)]
    assert {m["Subject"] for m in notices} == {"A change of your email address was asked for · Gatehouse",
                                               "Your email address was changed · Gatehouse"}
    for address, kind in ((new, "email_change"), (old, "email_change_requested"), (old, "email_changed")):
        row = await sent_once(db, address, kind)
        assert row.attempts == 1, kind
    assert len(mail_server.mailbox.to(new)) == 1 and len(mail_server.mailbox.to(old)) == 2
    assert (await user_row(db, account["id"])).email == new
