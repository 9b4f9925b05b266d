"""Re-authentication ("sudo mode", issue 14): changing a role, creating, deleting, bulk actions,
exports and ending sessions need a proof no older than 10 minutes. Without one the action
waits behind a "confirm it's you" form (an htmx dialog, or a page), carrying its data under a
signature; the password resumes the same action with the same data. The clock is moved, never
waited for (reauthentication.clock)."""
import re
from datetime import timedelta
from html import unescape

import pytest
from sqlalchemy import insert, update

from conftest import PASSWORD
from helpers import (
    assert_refused, audit_rows, element_html, location, open_session, send, session_rows, signed_in, text,
    toasts, user_named, user_row,
)
from soft_authenticator import SoftAuthenticator
from test_imports import job_of, uploaded_job
from test_passkeys import add_passkey, options
from test_second_factors import NOW, at_time, code_at, enrolled
from web.accounts import reauthentication
from web.imports import jobs
from web.core.db import utcnow
from web.core.tables import login_throttle, sessions


def later(monkeypatch, minutes: float) -> None:
    """As if `minutes` had passed since the tests' sessions began (each begins proven)."""
    monkeypatch.setattr(reauthentication, "clock", lambda: utcnow() + timedelta(minutes=minutes))


async def stale(app, make_user, monkeypatch, role="Admin"):
    """A signed-in account whose last proof is 11 minutes old, and its client."""
    account, client = await signed_in(app, make_user, role)
    later(monkeypatch, 11)
    return account, client


def confirm_form(body: str, form_id: str = "reauth-password-form") -> tuple[str, list[tuple[str, str]]]:
    """A confirm form's action and hidden fields (its CSRF token and signature included)."""
    form = re.search(rf'<form id="{form_id}"[^>]*>.*?</form>', body, re.S)
    assert form, body[:800]
    action = unescape(re.search(r'action="([^"]*)"', form.group(0)).group(1))
    fields = [(unescape(name), unescape(value)) for name, value in
              re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', form.group(0))]
    return action, fields


async def confirm(client, asked, proof: str = PASSWORD, *, hx: bool = True, target: str | None = None,
                  changed: dict | None = None):
    """Submit the confirm form of the answer `asked` as the person would (the dialog's form
    aims at the original target), its hidden fields replaced by `changed`."""
    action, fields = confirm_form(await text(asked))
    fields = [(name, (changed or {}).get(name, value)) for name, value in fields] + [("reauth_proof", proof)]
    return await send(client, action, fields, target=target, hx=hx, with_csrf=False)


async def assert_asked(response, *, dialog: bool = True) -> str:
    body = await text(response)
    assert response.status_code == 401, (response.status_code, body[:500])
    if dialog:
        assert response.headers["HX-Retarget"] == "#main" and response.headers["HX-Reswap"] == "beforeend"
        assert body.lstrip().startswith('<dialog id="reauth-dialog"') and "<html" not in body
    else:
        assert "<html" in body and "Confirm it" in body
    assert 'name="reauth_proof" type="password"' in body and 'autocomplete="current-password"' in body
    return body


def role_change(row, role: str) -> dict:
    return {"version": str(row.version), "username": row.username, "email": row.email, "role": role,
            "active": "1", "back": "/users?q=cu"}


# ---- each guarded action: asked, nothing done; the password resumes it --------------------

async def test_a_role_change_waits_for_the_password_then_saves_with_its_data(app, db, make_user, monkeypatch):
    me, client = await stale(app, make_user, monkeypatch)
    them = await make_user("Customer", username="cusa")
    before = await user_row(db, them["id"])

    asked = await send(client, f"/users/{them['id']}", role_change(before, "Manager"), target=f"user-{them['id']}")

    body = await assert_asked(asked)
    assert 'hx-target="#user-%d" hx-swap="outerHTML"' % them["id"] in body
    assert (await user_row(db, them["id"])).role == "Customer"
    saved = await confirm(client, asked, target=f"user-{them['id']}")
    assert saved.status_code == 200
    assert f'id="user-{them["id"]}"' in await text(saved)
    after = await user_row(db, them["id"])
    assert (after.role, after.version) == ("Manager", before.version + 1)
    [proof] = await audit_rows(db, "reauthenticate")
    assert (proof.actor_id, proof.target_id, proof.changes) == (me["id"], me["id"], {"factor": [None, "password"]})


async def test_an_edit_that_keeps_the_role_needs_no_proof(app, db, make_user, monkeypatch):
    _, client = await stale(app, make_user, monkeypatch)
    them = await make_user("Customer")
    before = await user_row(db, them["id"])

    response = await send(client, f"/users/{them['id']}", {**role_change(before, "Customer"), "username": "renamed"},
                          target=f"user-{them['id']}")

    assert response.status_code == 200
    assert (await user_row(db, them["id"])).username == "renamed"


async def test_changing_someones_email_in_the_table_waits_for_the_password(app, db, make_user, monkeypatch):
    _, client = await stale(app, make_user, monkeypatch)
    them = await make_user("Customer")
    before = await user_row(db, them["id"])

    asked = await send(client, f"/users/{them['id']}", {**role_change(before, "Customer"), "email": "x@example.org"},
                       target=f"user-{them['id']}")

    await assert_asked(asked)
    assert (await user_row(db, them["id"])).email == before.email


async def test_creating_a_user_waits_for_the_password(app, db, make_user, monkeypatch):
    _, client = await stale(app, make_user, monkeypatch)
    form = {"username": "newbie", "email": "newbie@example.com", "role": "Manager", "back": "/users"}

    asked = await send(client, "/users", form, target="user-new")

    await assert_asked(asked)
    assert await user_named(db, "newbie") is None
    created = await confirm(client, asked, target="user-new")
    assert created.status_code == 200
    assert (await user_named(db, "newbie")).role == "Manager"


async def test_deleting_a_user_waits_for_the_password(app, db, make_user, monkeypatch):
    _, client = await stale(app, make_user, monkeypatch)
    them = await make_user("Customer")

    asked = await send(client, f"/users/{them['id']}/delete", {"back": "/users"}, target=f"user-{them['id']}")

    await assert_asked(asked)
    assert (await user_row(db, them["id"])).deleted_at is None
    deleted = await confirm(client, asked, target=f"user-{them['id']}")
    assert deleted.status_code in (200, 204)
    assert (await user_row(db, them["id"])).deleted_at is not None


async def test_a_bulk_action_waits_for_the_password_and_keeps_its_selection(app, db, make_user, monkeypatch):
    _, client = await stale(app, make_user, monkeypatch)
    picked = [await make_user("Customer") for _ in range(3)]
    form = [("action", "deactivate"), *(("ids", str(u["id"])) for u in picked[:2]), ("back", "/users")]

    asked = await send(client, "/users/bulk", form, target="bulk-form")

    await assert_asked(asked)
    assert [(await user_row(db, u["id"])).active for u in picked] == [True, True, True]
    done = await confirm(client, asked, target="bulk-form")
    assert done.status_code in (200, 204)
    assert [(await user_row(db, u["id"])).active for u in picked] == [False, False, True]


@pytest.mark.parametrize("which", ["end-others", "end-one"])
async def test_ending_other_sessions_waits_for_the_password(app, db, make_user, monkeypatch, which):
    me, client = await stale(app, make_user, monkeypatch, role="Customer")
    other = await open_session(app, app.test_client(), me["id"], user_agent="Phone")
    path = "/profile/sessions/end-others" if which == "end-others" else f"/profile/sessions/{other}/end"

    asked = await send(client, path, target="profile-sessions")

    await assert_asked(asked)
    assert len(await session_rows(db, me["id"])) == 2
    ended = await confirm(client, asked, target="profile-sessions")
    body = await text(ended)
    assert ended.status_code == 200 and body.startswith('<section id="profile-sessions"')
    assert [s.user_agent for s in await session_rows(db, me["id"])] == ["pytest"]


async def test_an_export_waits_for_the_password_then_starts_the_download(app, db, make_user, monkeypatch):
    _, client = await stale(app, make_user, monkeypatch, role="Manager")
    url = "/audit.csv?action=login"

    asked = await client.get(url)

    await assert_asked(asked, dialog=False)
    assert await audit_rows(db, "export") == []
    action, _ = confirm_form(await text(asked))
    assert action == "/reauthenticate"
    confirmed = await confirm(client, asked, hx=False)
    assert confirmed.status_code == 200 and confirmed.headers["Refresh"] == f"0; url={url}"
    download = await client.get(url)
    assert download.status_code == 200 and download.headers["Content-Type"].startswith("text/csv")
    assert len(await audit_rows(db, "export")) == 1


async def test_reverting_a_role_change_from_the_audit_log_waits_for_the_password(app, db, make_user, monkeypatch):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    before = await user_row(db, them["id"])
    await send(client, f"/users/{them['id']}", role_change(before, "Manager"), target=f"user-{them['id']}")
    [promotion] = await audit_rows(db, "update")
    later(monkeypatch, 11)
    form = [("field", "role"), ("version", str(before.version + 1)), ("back", "/audit")]

    asked = await send(client, f"/audit/{promotion.id}/revert", form, target=f"event-{promotion.id}")

    await assert_asked(asked)
    assert (await user_row(db, them["id"])).role == "Manager"
    reverted = await confirm(client, asked, target=f"event-{promotion.id}")
    assert reverted.status_code == 200 and reverted.headers["HX-Retarget"] == "#audit-table"
    assert (await user_row(db, them["id"])).role == "Customer"


async def test_starting_an_import_waits_for_the_password(app, db, make_user, monkeypatch):
    _, client = await stale(app, make_user, monkeypatch)
    job_id = await uploaded_job(client, "username,email\nimported.one,imported.one@example.com\n")

    asked = await send(client, f"/users/import/{job_id}/start", {}, hx=False)

    await assert_asked(asked, dialog=False)
    assert (await job_of(db, job_id)).state == jobs.PREVIEW
    started = await confirm(client, asked, hx=False)
    assert started.status_code == 303 and location(started) == f"/users/import/{job_id}"
    assert (await job_of(db, job_id)).state != jobs.PREVIEW


# ---- without JavaScript ------------------------------------------------------------------

async def test_without_javascript_the_form_is_a_page_that_resumes_the_action(app, db, make_user, monkeypatch):
    _, client = await stale(app, make_user, monkeypatch)
    them = await make_user("Customer")
    before = await user_row(db, them["id"])

    asked = await send(client, f"/users/{them['id']}", role_change(before, "Manager"), hx=False)

    body = await assert_asked(asked, dialog=False)
    assert 'hx-boost="false"' in element_html(body, "main")
    saved = await confirm(client, asked, hx=False)
    assert saved.status_code == 303 and location(saved) == "/users?q=cu"
    assert (await user_row(db, them["id"])).role == "Manager"


# ---- when it asks ------------------------------------------------------------------------

async def test_a_new_session_counts_as_a_proof_for_ten_minutes(app, db, make_user, monkeypatch):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    later(monkeypatch, 9.9)

    response = await send(client, f"/users/{them['id']}/delete", {"back": "/users"}, target=f"user-{them['id']}")

    assert response.status_code in (200, 204)
    assert (await user_row(db, them["id"])).deleted_at is not None


async def test_a_proof_lasts_ten_minutes_then_it_asks_again(app, db, make_user, monkeypatch):
    _, client = await stale(app, make_user, monkeypatch)
    first, second, third = [await make_user("Customer") for _ in range(3)]

    async def delete(user):
        return await send(client, f"/users/{user['id']}/delete", {"back": "/users"}, target=f"user-{user['id']}")

    assert (await confirm(client, await delete(first), target=f"user-{first['id']}")).status_code in (200, 204)
    later(monkeypatch, 11 + 9.9)
    assert (await delete(second)).status_code in (200, 204)
    later(monkeypatch, 11 + 10.1)
    await assert_asked(await delete(third))
    assert (await user_row(db, third["id"])).deleted_at is None


async def test_a_session_from_before_the_upgrade_is_asked(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    async with db.write() as conn:
        await conn.execute(update(sessions).where(sessions.c.user_id == me["id"]).values(reauthenticated_at=None))

    await assert_asked(await send(client, f"/users/{them['id']}/delete", {"back": "/users"}, target=f"user-{them['id']}"))


# ---- a wrong proof, the throttle ---------------------------------------------------------

async def test_a_wrong_password_is_said_beside_the_field_and_the_dialog_stays(app, db, make_user, monkeypatch):
    me, client = await stale(app, make_user, monkeypatch)
    them = await make_user("Customer")

    asked = await send(client, f"/users/{them['id']}/delete", {"back": "/users"}, target=f"user-{them['id']}")
    wrong = await confirm(client, asked, "not my password at all", target=f"user-{them['id']}")

    body = await text(wrong)
    assert wrong.status_code == 401
    assert (wrong.headers["HX-Retarget"], wrong.headers["HX-Reswap"]) == ("#reauth-form", "outerHTML")
    assert body.startswith('<div id="reauth-form">')
    assert 'aria-invalid="true"' in body and reauthentication.WRONG in element_html(body, "reauth-proof-error")
    assert (await user_row(db, them["id"])).deleted_at is None
    [failure] = await audit_rows(db, "reauthenticate_failed")
    assert (failure.actor_id, failure.changes) == (me["id"], {"factor": [None, "password"]})
    # The form that came back still resumes the same action.
    assert (await confirm(client, wrong, target=f"user-{them['id']}")).status_code in (200, 204)
    assert (await user_row(db, them["id"])).deleted_at is not None


async def test_an_empty_proof_is_asked_for_again_without_counting(app, db, make_user, monkeypatch):
    _, client = await stale(app, make_user, monkeypatch)
    them = await make_user("Customer")

    asked = await send(client, f"/users/{them['id']}/delete", {"back": "/users"}, target=f"user-{them['id']}")
    empty = await confirm(client, asked, "  ", target=f"user-{them['id']}")

    assert empty.status_code == 422
    assert reauthentication.EMPTY in element_html(await text(empty), "reauth-proof-error")
    assert await audit_rows(db, "reauthenticate_failed") == []


async def test_proofs_count_toward_the_login_throttle(app, db, make_user, monkeypatch):
    me, client = await stale(app, make_user, monkeypatch)
    them = await make_user("Customer")
    async with db.write() as conn:  # as after failures enough to lock this account
        await conn.execute(insert(login_throttle).values(
            key=f"account:{me['id']}", failures=5, window_start=utcnow(), locked_until=utcnow() + timedelta(seconds=60)))

    asked = await send(client, f"/users/{them['id']}/delete", {"back": "/users"}, target=f"user-{them['id']}")
    locked = await confirm(client, asked, target=f"user-{them['id']}")

    assert locked.status_code == 429 and 0 < int(locked.headers["Retry-After"]) <= 60
    assert "Try again in" in element_html(await text(locked), "reauth-proof-error")
    assert (await user_row(db, them["id"])).deleted_at is None


# ---- what the signed form refuses --------------------------------------------------------

@pytest.mark.sqlite_only  # the signature's checks: no database part
async def test_changed_fields_are_refused(app, db, make_user, monkeypatch):
    _, client = await stale(app, make_user, monkeypatch)
    them = await make_user("Customer")
    before = await user_row(db, them["id"])

    asked = await send(client, f"/users/{them['id']}", role_change(before, "Manager"), target=f"user-{them['id']}")
    tampered = await confirm(client, asked, target=f"user-{them['id']}", changed={"role": "Admin"})

    await assert_refused(tampered, 400, "expired or does not belong")
    assert (await user_row(db, them["id"])).role == "Customer"
    assert await audit_rows(db, "reauthenticate") == []


@pytest.mark.sqlite_only  # the signature's checks: no database part
async def test_a_signature_for_another_action_or_session_is_refused(app, db, make_user, monkeypatch):
    me, client = await stale(app, make_user, monkeypatch)
    first, second = await make_user("Customer"), await make_user("Customer")
    asked = await send(client, f"/users/{first['id']}/delete", {"back": "/users"}, target=f"user-{first['id']}")
    _, fields = confirm_form(await text(asked))
    signature = dict(fields)["reauth_pending"]

    elsewhere = await send(client, f"/users/{second['id']}/delete",
                           {"back": "/users", "reauth_pending": signature, "reauth_proof": PASSWORD}, target="x")
    other_browser = app.test_client()
    await open_session(app, other_browser, me["id"])
    later(monkeypatch, 11)  # that session's proof is old too
    other_session = await send(other_browser, f"/users/{first['id']}/delete",
                               {"back": "/users", "reauth_pending": signature, "reauth_proof": PASSWORD}, target="x")

    await assert_refused(elsewhere, 400)
    await assert_refused(other_session, 400)
    assert [(await user_row(db, u["id"])).deleted_at for u in (first, second)] == [None, None]


@pytest.mark.sqlite_only  # the signature's checks: no database part
async def test_a_signature_older_than_ten_minutes_is_refused(app, db, make_user, monkeypatch):
    _, client = await stale(app, make_user, monkeypatch)
    them = await make_user("Customer")
    asked = await send(client, f"/users/{them['id']}/delete", {"back": "/users"}, target=f"user-{them['id']}")
    later(monkeypatch, 11 + 10.1)

    await assert_refused(await confirm(client, asked, target=f"user-{them['id']}"), 400, "expired")
    assert (await user_row(db, them["id"])).deleted_at is None


async def test_the_profiles_current_password_is_a_proof_too(app, db, make_user, monkeypatch):
    me, client = await stale(app, make_user, monkeypatch, role="Customer")
    await open_session(app, app.test_client(), me["id"], user_agent="Phone")

    changed = await send(client, "/profile/email", {"email": "new.address@example.com", "current_password": PASSWORD},
                         target="profile-email-form")
    ended = await send(client, "/profile/sessions/end-others", target="profile-sessions")

    assert changed.status_code == 200 and ended.status_code == 200
    assert [s.user_agent for s in await session_rows(db, me["id"])] == ["pytest"]


@pytest.mark.sqlite_only  # the signature's checks: no database part
async def test_the_resumed_action_still_needs_its_csrf_token(app, db, make_user, monkeypatch):
    _, client = await stale(app, make_user, monkeypatch)
    them = await make_user("Customer")
    asked = await send(client, f"/users/{them['id']}/delete", {"back": "/users"}, target=f"user-{them['id']}")
    _, fields = confirm_form(await text(asked))

    forged = await send(client, f"/users/{them['id']}/delete",
                        [(n, v) for n, v in fields if n != "csrf_token"] + [("reauth_proof", PASSWORD)],
                        target=f"user-{them['id']}", with_csrf=False)

    await assert_refused(forged, 403)
    assert (await user_row(db, them["id"])).deleted_at is None
    assert await audit_rows(db, "reauthenticate") == []


@pytest.mark.sqlite_only  # the signature's checks: no database part
async def test_a_link_confirmation_needs_a_signed_get(app, db, make_user, monkeypatch):
    _, client = await stale(app, make_user, monkeypatch)
    them = await make_user("Customer")
    asked = await send(client, f"/users/{them['id']}/delete", {"back": "/users"}, hx=False)
    _, fields = confirm_form(await text(asked))

    response = await send(client, "/reauthenticate", fields + [("reauth_proof", PASSWORD)], hx=False, with_csrf=False)

    assert response.status_code == 400
    assert (await user_row(db, them["id"])).deleted_at is None


# ---- with a second factor ----------------------------------------------------------------

async def test_a_code_from_the_app_or_a_recovery_code_also_confirms(app, db, config, make_user, monkeypatch):
    me, client = await stale(app, make_user, monkeypatch)
    secret, recovery = await enrolled(db, config, me["id"])
    first, second = await make_user("Customer"), await make_user("Customer")
    at_time(app, NOW + 60)

    asked = await send(client, f"/users/{first['id']}/delete", {"back": "/users"}, target=f"user-{first['id']}")
    assert "Password or authentication code" in await text(asked)
    by_app = await confirm(client, asked, code_at(secret, NOW + 60), target=f"user-{first['id']}")
    later(monkeypatch, 11 + 11)
    asked = await send(client, f"/users/{second['id']}/delete", {"back": "/users"}, target=f"user-{second['id']}")
    by_recovery_code = await confirm(client, asked, recovery[0].upper(), target=f"user-{second['id']}")

    assert by_app.status_code in (200, 204) and by_recovery_code.status_code in (200, 204)
    assert [(await user_row(db, u["id"])).deleted_at is not None for u in (first, second)] == [True, True]
    assert [e.changes["factor"][1] for e in await audit_rows(db, "reauthenticate")] == ["totp", "recovery"]
    assert "9 codes left" in str(toasts(by_recovery_code, "warning"))


async def test_a_used_code_is_refused(app, db, config, make_user, monkeypatch):
    me, client = await stale(app, make_user, monkeypatch)
    secret, _ = await enrolled(db, config, me["id"])  # confirmed with the code of NOW
    them = await make_user("Customer")
    at_time(app, NOW + 10)

    asked = await send(client, f"/users/{them['id']}/delete", {"back": "/users"}, target=f"user-{them['id']}")
    refused = await confirm(client, asked, code_at(secret, NOW), target=f"user-{them['id']}")

    assert refused.status_code == 401
    assert reauthentication.WRONG_CODE in element_html(await text(refused), "reauth-proof-error")
    assert (await user_row(db, them["id"])).deleted_at is None
    [failure] = await audit_rows(db, "reauthenticate_failed")
    assert failure.changes == {"factor": [None, "totp"]}


async def test_a_passkey_also_confirms_once_per_challenge(app, db, make_user, monkeypatch):
    me, client = await signed_in(app, make_user, "Admin")
    key = SoftAuthenticator()
    assert (await add_passkey(client, key, "Laptop")).status_code == 200
    first, second = await make_user("Customer"), await make_user("Customer")
    later(monkeypatch, 11)

    async def with_passkey(user, answer=None):
        asked = await send(client, f"/users/{user['id']}/delete", {"back": "/users"}, target=f"user-{user['id']}")
        action, fields = confirm_form(await text(asked), "reauth-passkey-form")
        # As static/passkeys.js does: a challenge, the authenticator's answer, the form sent.
        answer = answer or key.get(await options(client, "/reauthenticate/passkey/options"))
        fields = [(name, answer if name == "credential" else value) for name, value in fields]
        return answer, await send(client, action, fields, target=f"user-{user['id']}", with_csrf=False)

    answer, confirmed = await with_passkey(first)
    later(monkeypatch, 11 + 11)
    _, replayed = await with_passkey(second, answer)

    assert confirmed.status_code in (200, 204) and (await user_row(db, first["id"])).deleted_at is not None
    assert replayed.status_code == 401 and reauthentication.PASSKEY_FAILED in await text(replayed)
    assert (await user_row(db, second["id"])).deleted_at is None
    assert [(e.action, e.changes["factor"][1]) for e in await audit_rows(db, "reauthenticate")
            + await audit_rows(db, "reauthenticate_failed")] == [("reauthenticate", "passkey"),
                                                                 ("reauthenticate_failed", "passkey")]
