"""The users table's writes over HTTP: edit in place, save, version conflicts, create,
delete with undo, restore, bulk actions, the flows without JavaScript, and CSRF."""
import json
import re

import pytest
from sqlalchemy import select, update

from helpers import (
    assert_refused, audit_rows, csrf, element_text, htmx, input_value, is_login_redirect, location,
    login_ok, open_session, rows, send, session_rows, signed_in, text, toasts, triggers, user_named,
    user_row,
)
from web.core.db import utcnow
from web.core.tables import audit_events, users
from web.core.security import unmask
from web.users import edits
from web.users.edits import LAST_ADMIN

# ---- helpers -----------------------------------------------------------------------------

def edit_form(row, back: str = "/users", **changes) -> dict:
    """What the edit row posts for `row` (a users row), with `changes` typed in."""
    values = {"version": str(row.version), "username": row.username, "email": row.email,
              "role": row.role, "active": row.active, "back": back, **changes}
    active = values.pop("active")
    if active:
        values["active"] = "1"
    return values


async def audits(db, action: str, target_id: int | None = None):
    found = await audit_rows(db, action)
    return [a for a in found if target_id is None or a.target_id == target_id]


async def all_users(db):
    return {u.id: u for u in await rows(db, select(users))}


def snapshot(all_rows) -> dict:
    """What a write could have changed, per user."""
    return {i: (u.username, u.email, u.role, u.active, u.version, u.deleted_at) for i, u in all_rows.items()}


async def audit_count(db) -> int:
    """Events recording a change: a refusal is recorded too ("refused"), and changes nothing."""
    return len(await rows(db, select(audit_events.c.id).where(audit_events.c.action != "refused")))


def edit_url(user_id: int) -> str:
    return f"/users/{user_id}/edit"


# ---- the edit row ------------------------------------------------------------------------

async def test_the_edit_row_comes_prefilled(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Manager", username="Kim.Lee", email="kim@example.org", active=False)
    response = await client.get(edit_url(them["id"]) + "?q=ki&sort=email", headers=htmx(f"user-{them['id']}"))
    body = await text(response)
    assert response.status_code == 200
    assert "<html" not in body and body.lstrip().startswith("<tr")
    assert f'id="user-{them["id"]}"' in body and "data-editing" in body
    assert input_value(body, "username") == "Kim.Lee"
    assert input_value(body, "email") == "kim@example.org"
    assert input_value(body, "version") == "1"
    assert input_value(body, "back") == "/users?q=ki&sort=email"
    assert re.search(r'<option value="Manager" selected>', body)
    assert len(re.findall(r"<option [^>]*selected", body)) == 1
    active = re.search(r'<input type="checkbox" name="active"[^>]*>', body).group(0)
    assert "checked" not in active
    # Tokens are masked afresh at every use: the same secret underneath.
    assert unmask(input_value(body, "csrf_token")) == unmask(await csrf(client))


async def test_the_edit_row_shows_an_active_box_ticked_for_an_active_user(app, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    body = await text(await client.get(edit_url(them["id"]), headers=htmx(f"user-{them['id']}")))
    assert "checked" in re.search(r'<input type="checkbox" name="active"[^>]*>', body).group(0)


@pytest.mark.parametrize("target_role", ["Admin", "Manager"])
async def test_a_manager_may_not_edit_staff(app, db, make_user, target_role):
    _, client = await signed_in(app, make_user, "Manager")
    them = await make_user(target_role)
    before = await user_row(db, them["id"])
    await assert_refused(await client.get(edit_url(them["id"]), headers=htmx(f"user-{them['id']}")),
                         403, "Managers edit Customers only")
    assert (await client.get(edit_url(them["id"]))).status_code == 403
    response = await send(client, f"/users/{them['id']}", edit_form(before, username="hijacked", active=False),
                          target=f"user-{them['id']}")
    await assert_refused(response, 403)
    assert await user_row(db, them["id"]) == before



async def test_a_save_changes_the_row_only_at_the_version_it_was_authorised_on(app, db, make_user, monkeypatch):
    # A Manager's save is authorised on the row read before the write; a promotion committed in
    # between, at the very version the form names, must not let the save through.
    _, client = await signed_in(app, make_user, "Manager")
    them = await make_user("Customer")
    before = await user_row(db, them["id"])
    checked_values = edits.checked_values

    async def promoted_meanwhile(current, wanted):
        async with db.write() as conn:
            await conn.execute(update(users).where(users.c.id == them["id"])
                               .values(role="Manager", version=users.c.version + 1))
        return await checked_values(current, wanted)
    monkeypatch.setattr(edits, "checked_values", promoted_meanwhile)
    form = edit_form(before, username="hijacked")
    form["version"] = str(before.version + 1)
    response = await send(client, f"/users/{them['id']}", form, target=f"user-{them['id']}")
    assert response.status_code == 409, await text(response)
    after = await user_row(db, them["id"])
    assert (after.username, after.role) == (before.username, "Manager")

async def test_a_managers_edit_row_has_no_role_select(app, make_user):
    _, client = await signed_in(app, make_user, "Manager")
    them = await make_user("Customer")
    response = await client.get(edit_url(them["id"]), headers=htmx(f"user-{them['id']}"))
    body = await text(response)
    assert response.status_code == 200
    assert input_value(body, "username") == them["username"]
    assert 'name="role"' not in body
    _, admin_client = await signed_in(app, make_user, "Admin")
    admin_body = await text(await admin_client.get(edit_url(them["id"]), headers=htmx(f"user-{them['id']}")))
    assert '<select id="edit-%d-role" name="role"' % them["id"] in admin_body


async def test_editing_a_deleted_or_missing_user_is_not_found(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    async with db.write() as conn:
        await conn.execute(update(users).where(users.c.id == them["id"]).values(deleted_at=utcnow()))
    await assert_refused(await client.get(edit_url(them["id"]), headers=htmx("x")), 404)
    await assert_refused(await client.get(edit_url(99999), headers=htmx("x")), 404)


# ---- saving ------------------------------------------------------------------------------

async def test_saving_changes_returns_the_row_and_records_only_what_changed(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="olduser", email="old@example.com")
    before = await user_row(db, them["id"])
    response = await send(client, f"/users/{them['id']}",
                          edit_form(before, username="newuser", email="new@example.com"),
                          target=f"user-{them['id']}")
    body = await text(response)
    assert response.status_code == 200, body
    assert body.lstrip().startswith("<tr") and "<html" not in body
    assert f'id="user-{them["id"]}"' in body and "data-editing" not in body
    assert 'data-action="open">newuser</a></td>' in body
    assert '<td class="col-email">new@example.com</td>' in body

    after = await user_row(db, them["id"])
    assert (after.username, after.email, after.role, after.active) == ("newuser", "new@example.com", "Customer", True)
    assert after.version == before.version + 1
    assert after.password_hash == before.password_hash

    events = await audits(db, "update", them["id"])
    assert len(events) == 1
    assert events[0].changes == {"username": ["olduser", "newuser"], "email": ["old@example.com", "new@example.com"]}
    assert events[0].actor_id == me["id"] and events[0].target_type == "user"
    recorded = json.dumps(events[0].changes)
    assert "password" not in recorded and before.password_hash not in recorded and "argon2" not in recorded

    said = toasts(response, "success")
    assert len(said) == 1
    assert "olduser → newuser" in said[0]["text"] and "old@example.com → new@example.com" in said[0]["text"]


async def test_saving_role_and_active_records_them_as_old_and_new(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    before = await user_row(db, them["id"])
    response = await send(client, f"/users/{them['id']}", edit_form(before, role="Manager", active=False),
                          target=f"user-{them['id']}")
    assert response.status_code == 200, await text(response)
    after = await user_row(db, them["id"])
    assert (after.role, after.active, after.version) == ("Manager", False, 2)
    [event] = await audits(db, "update", them["id"])
    assert event.changes == {"role": ["Customer", "Manager"], "active": [True, False]}
    text_ = toasts(response, "success")[0]["text"]
    assert "role Customer → Manager" in text_ and "active yes → no" in text_


async def test_a_toast_travels_in_the_htmx_answer_without_rewriting_the_session_cookie(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    form = edit_form(await user_row(db, them["id"]), role="Manager")
    response = await send(client, f"/users/{them['id']}", form, target=f"user-{them['id']}")
    assert response.status_code == 200, await text(response)
    assert "Saved" in toasts(response, "success")[0]["text"]
    assert response.headers.getlist("Set-Cookie") == []
    # Without htmx the answer is a redirect: the toast waits in the session for the next page.
    form = edit_form(await user_row(db, them["id"]), role="Customer")
    response = await send(client, f"/users/{them['id']}", form, hx=False)
    assert response.status_code == 303
    assert any(line.startswith("gatehouse-csrf=") for line in response.headers.getlist("Set-Cookie"))
    page = await text(await client.get(location(response)))
    assert "Saved" in element_text(page, "toasts")


async def test_saving_without_changes_writes_nothing(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    before = await user_row(db, them["id"])
    response = await send(client, f"/users/{them['id']}", edit_form(before), target=f"user-{them['id']}")
    assert response.status_code == 200
    assert await user_row(db, them["id"]) == before
    assert await audits(db, "update") == []
    assert "No changes" in toasts(response)[0]["text"]


@pytest.mark.parametrize("field, typed, message", [
    ("email", "not-an-email", "@"),
    ("email", "TAKEN@example.com", "already exists"),
    ("username", "TAKEN", "taken"),
    ("username", "", "Choose a username"),
    ("username", "no spaces", "letters, digits"),
])
async def test_invalid_values_come_back_with_the_message_and_change_nothing(app, db, make_user, field, typed, message):
    _, client = await signed_in(app, make_user, "Admin")
    await make_user("Customer", username="taken", email="taken@example.com")
    them = await make_user("Customer", username="editme", email="editme@example.com")
    before = await user_row(db, them["id"])
    other = "username" if field == "email" else "email"
    form = edit_form(before, **{field: typed, other: f"typed-{other}" if other == "username" else "typed@example.com"})
    response = await send(client, f"/users/{them['id']}", form, target=f"user-{them['id']}")
    body = await text(response)
    assert response.status_code == 422, body
    assert body.lstrip().startswith("<tr") and "data-editing" in body
    assert input_value(body, field) == typed
    assert input_value(body, other) == form[other]
    shown = element_text(body, f"edit-{them['id']}-{field}-error")
    assert message.lower() in shown.lower()
    assert element_text(body, f"edit-{them['id']}-{other}-error") == ""
    assert 'aria-invalid="true"' in re.search(rf'<input id="edit-{them["id"]}-{field}"[^>]*>', body).group(0)
    assert await user_row(db, them["id"]) == before
    assert await audits(db, "update") == []


async def test_a_username_differing_only_in_case_from_another_is_taken(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    await make_user("Customer", username="MixedCase")
    them = await make_user("Customer")
    before = await user_row(db, them["id"])
    response = await send(client, f"/users/{them['id']}", edit_form(before, username="mixedcase"),
                          target=f"user-{them['id']}")
    assert response.status_code == 422
    assert "taken" in element_text(await text(response), f"edit-{them['id']}-username-error")
    assert await user_row(db, them["id"]) == before


async def test_a_user_may_keep_their_own_username_in_another_case(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="lowername")
    before = await user_row(db, them["id"])
    response = await send(client, f"/users/{them['id']}", edit_form(before, username="LowerName"),
                          target=f"user-{them['id']}")
    assert response.status_code == 200, await text(response)
    assert (await user_row(db, them["id"])).username == "LowerName"


async def test_a_stored_value_that_predates_the_rules_does_not_block_other_changes(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="old.timer", email="old.timer@legacy.test")
    before = await user_row(db, them["id"])
    response = await send(client, f"/users/{them['id']}", edit_form(before, role="Manager"),
                          target=f"user-{them['id']}")
    assert response.status_code == 200, await text(response)
    after = await user_row(db, them["id"])
    assert (after.role, after.email) == ("Manager", "old.timer@legacy.test")
    # Typed anew, the same address is checked like any other.
    response = await send(client, f"/users/{them['id']}", edit_form(after, email="old.timer@legacy2.test"),
                          target=f"user-{them['id']}")
    assert response.status_code == 422
    assert "special-use" in element_text(await text(response), f"edit-{them['id']}-email-error")


# ---- version conflicts -------------------------------------------------------------------

async def test_a_stale_version_shows_theirs_and_overwriting_with_the_current_version_works(app, db, make_user):
    _, mine = await signed_in(app, make_user, "Admin")
    _, theirs = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="shared", email="shared@example.com")
    seen = await user_row(db, them["id"])

    first = await send(theirs, f"/users/{them['id']}", edit_form(seen, email="theirs@example.com"),
                       target=f"user-{them['id']}")
    assert first.status_code == 200
    current = await user_row(db, them["id"])
    assert current.version == 2

    response = await send(mine, f"/users/{them['id']}", edit_form(seen, username="mine"),
                          target=f"user-{them['id']}")
    body = await text(response)
    assert response.status_code == 409, body
    assert "Theirs" in body and "theirs@example.com" in body
    assert element_text(body, f"edit-{them['id']}-email-theirs") == "Theirs: theirs@example.com"
    assert "Overwrite with mine" in body
    assert input_value(body, "version") == "2"
    assert input_value(body, "username") == "mine"
    assert input_value(body, "email") == "shared@example.com"
    assert await user_row(db, them["id"]) == current
    assert len(await audits(db, "update", them["id"])) == 1

    again = {**edit_form(seen, username="mine"), "version": input_value(body, "version")}
    response = await send(mine, f"/users/{them['id']}", again, target=f"user-{them['id']}")
    assert response.status_code == 200, await text(response)
    final = await user_row(db, them["id"])
    assert (final.username, final.email, final.version) == ("mine", "shared@example.com", 3)
    events = await audits(db, "update", them["id"])
    assert len(events) == 2
    assert events[1].changes == {"username": ["shared", "mine"], "email": ["theirs@example.com", "shared@example.com"]}


async def test_a_malformed_version_is_a_bad_request(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    before = await user_row(db, them["id"])
    response = await send(client, f"/users/{them['id']}", edit_form(before, version="x", username="other"),
                          target=f"user-{them['id']}")
    await assert_refused(response, 400)
    assert await user_row(db, them["id"]) == before


# ---- roles -------------------------------------------------------------------------------

async def test_a_manager_cannot_give_a_role_by_posting_it(app, db, make_user):
    _, client = await signed_in(app, make_user, "Manager")
    them = await make_user("Customer", username="promoteme")
    before = await user_row(db, them["id"])
    response = await send(client, f"/users/{them['id']}",
                          edit_form(before, role="Admin", username="promoted"), target=f"user-{them['id']}")
    assert response.status_code == 200, await text(response)
    after = await user_row(db, them["id"])
    assert after.role == "Customer"
    assert after.username == "promoted"
    [event] = await audits(db, "update", them["id"])
    assert "role" not in event.changes


async def test_a_manager_edits_a_customers_username_email_and_active(app, db, make_user):
    _, client = await signed_in(app, make_user, "Manager")
    them = await make_user("Customer")
    before = await user_row(db, them["id"])
    response = await send(client, f"/users/{them['id']}",
                          edit_form(before, username="renamed", email="renamed@example.com", active=False),
                          target=f"user-{them['id']}")
    assert response.status_code == 200
    after = await user_row(db, them["id"])
    assert (after.username, after.email, after.active, after.role) == ("renamed", "renamed@example.com", False, "Customer")


@pytest.mark.parametrize("change, field", [({"role": "Manager"}, "role"), ({"role": "Customer"}, "role"),
                                            ({"active": False}, "active")])
async def test_the_only_active_admin_cannot_be_demoted_or_deactivated(app, db, make_user, change, field):
    me, client = await signed_in(app, make_user, "Admin")
    await make_user("Admin", active=False)       # inactive Admins do not count
    gone = await make_user("Admin")              # nor deleted ones
    async with db.write() as conn:
        await conn.execute(update(users).where(users.c.id == gone["id"]).values(deleted_at=utcnow()))
    before = await user_row(db, me["id"])
    response = await send(client, f"/users/{me['id']}", edit_form(before, **change), target=f"user-{me['id']}")
    body = await text(response)
    assert response.status_code == 422, body
    assert element_text(body, f"edit-{me['id']}-{field}-error") == LAST_ADMIN
    assert "last active Admin" in LAST_ADMIN
    assert await user_row(db, me["id"]) == before
    assert await audits(db, "update") == []


async def test_the_only_active_admin_cannot_be_deleted(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    response = await send(client, f"/users/{me['id']}/delete", {"back": "/users"}, target=f"user-{me['id']}")
    await assert_refused(response, 409)
    row = await user_row(db, me["id"])
    assert row.deleted_at is None and row.active and row.role == "Admin"
    assert await audits(db, "delete") == []


async def test_with_a_second_active_admin_an_admin_can_be_demoted(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    other = await make_user("Admin")
    before = await user_row(db, other["id"])
    response = await send(client, f"/users/{other['id']}", edit_form(before, role="Manager"),
                          target=f"user-{other['id']}")
    assert response.status_code == 200, await text(response)
    assert (await user_row(db, other["id"])).role == "Manager"
    # Now `me` is the only active Admin left.
    mine = await user_row(db, me["id"])
    response = await send(client, f"/users/{me['id']}", edit_form(mine, role="Manager"), target=f"user-{me['id']}")
    assert response.status_code == 422


async def test_with_a_second_active_admin_you_can_step_down_yourself(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    await make_user("Admin")
    mine = await user_row(db, me["id"])
    response = await send(client, f"/users/{me['id']}", edit_form(mine, role="Customer"), target=f"user-{me['id']}")
    assert response.status_code == 200, await text(response)
    assert (await user_row(db, me["id"])).role == "Customer"
    assert is_login_redirect(await client.get("/users"))  # a demotion ends the demoted's sessions


# ---- create ------------------------------------------------------------------------------

NEW = {"username": "newbie", "email": "newbie@example.com", "role": "Manager", "back": "/users"}


async def test_creating_a_user_returns_its_row_and_records_it(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    response = await send(client, "/users", NEW, target="user-new")
    body = await text(response)
    assert response.status_code == 200, body
    created = await user_named(db, "newbie")
    assert created is not None
    assert (created.email, created.role, created.active, created.version) == ("newbie@example.com", "Manager", True, 1)
    assert body.lstrip().startswith("<tr") and "<html" not in body
    assert f'id="user-{created.id}"' in body and 'data-action="open">newbie</a></td>' in body
    assert 'class="badge badge-invited">Invited<' in body
    [event] = await audits(db, "create", created.id)
    assert event.actor_id == me["id"]
    assert event.changes == {"username": [None, "newbie"], "email": [None, "newbie@example.com"],
                             "role": [None, "Manager"], "invited": [None, True]}
    assert toasts(response, "success")[0]["text"] == "Invited newbie: we sent a link to newbie@example.com."


@pytest.mark.parametrize("changes, field, message", [
    ({"email": "newbie@"}, "email", ""),
    ({"email": ""}, "email", "Enter an email"),
    ({"username": "x"}, "username", "3 to 32"),
    ({"username": "TAKEN"}, "username", "taken"),
    ({"email": "Taken@Example.com"}, "email", "already exists"),
    ({"role": "Root"}, "role", "Choose one of the roles"),
])
async def test_creating_checks_fields_like_registration(app, db, make_user, changes, field, message):
    _, client = await signed_in(app, make_user, "Admin")
    await make_user("Customer", username="taken", email="taken@example.com")
    count = len(await all_users(db))
    response = await send(client, "/users", {**NEW, **changes}, target="user-new")
    body = await text(response)
    assert response.status_code == 422, body
    assert 'id="user-new"' in body and "<html" not in body
    shown = element_text(body, f"new-{field}-error")
    assert shown and message.lower() in shown.lower()
    for kept in ("username", "email"):
        assert input_value(body, kept) == {**NEW, **changes}[kept]
    assert len(await all_users(db)) == count
    assert await audits(db, "create") == []


async def test_a_manager_creating_an_admin_gets_a_customer(app, db, make_user):
    _, client = await signed_in(app, make_user, "Manager")
    response = await send(client, "/users", {**NEW, "role": "Admin"}, target="user-new")
    assert response.status_code == 200, await text(response)
    created = await user_named(db, "newbie")
    assert created.role == "Customer"
    [event] = await audits(db, "create", created.id)
    assert event.changes["role"] == [None, "Customer"]


# ---- delete and restore ------------------------------------------------------------------

async def test_deleting_a_user_ends_their_sessions_and_offers_undo(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="leaving")
    victim = app.test_client()
    await login_ok(victim, "leaving")
    assert (await victim.get("/dashboard")).status_code == 200
    assert len(await session_rows(db, them["id"])) == 1

    response = await send(client, f"/users/{them['id']}/delete", {"back": "/users"}, target=f"user-{them['id']}")
    assert response.status_code == 200, await text(response)
    events = triggers(response)
    assert "users-changed" in events
    [item] = events["toast"]["items"]
    assert item["undo"] == f"/users/{them['id']}/restore?back=%2Fusers"  # back to the same view
    assert "leaving" in item["text"]

    row = await user_row(db, them["id"])
    assert row.deleted_at is not None
    assert await session_rows(db, them["id"]) == []
    assert is_login_redirect(await victim.get("/dashboard"))
    [event] = await audits(db, "delete", them["id"])
    assert event.actor_id == me["id"]
    assert "leaving" not in [n for n in re.findall(r'<td class="col-username"><a [^>]*>([^<]*)</a></td>',
                                                   await text(await client.get("/users")))]


async def test_deleting_yourself_is_refused(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    await make_user("Admin")  # not the last Admin: the refusal is about deleting oneself
    before = await user_row(db, me["id"])
    response = await send(client, f"/users/{me['id']}/delete", {"back": "/users"}, target=f"user-{me['id']}")
    await assert_refused(response, 409, "your own account")
    assert await user_row(db, me["id"]) == before
    assert await audits(db, "delete") == []
    assert (await client.get("/users")).status_code == 200


async def test_a_plain_delete_redirects_back_to_the_table(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    response = await send(client, f"/users/{them['id']}/delete", {"back": "/users?q=cu&sort=email"}, hx=False)
    assert response.status_code == 303
    assert location(response) == "/users?q=cu&sort=email"
    assert (await user_row(db, them["id"])).deleted_at is not None


async def test_a_manager_cannot_delete_staff(app, db, make_user):
    _, client = await signed_in(app, make_user, "Manager")
    for role in ("Admin", "Manager"):
        them = await make_user(role)
        response = await send(client, f"/users/{them['id']}/delete", {"back": "/users"}, target=f"user-{them['id']}")
        await assert_refused(response, 403)
        assert (await user_row(db, them["id"])).deleted_at is None


async def test_restoring_brings_the_user_back_exactly(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Manager", username="Returner", email="Returner@Example.org", active=False)
    before = await user_row(db, them["id"])
    deleted = await send(client, f"/users/{them['id']}/delete", {"back": "/users"}, target=f"user-{them['id']}")
    assert deleted.status_code == 200

    response = await send(client, f"/users/{them['id']}/restore", target="users-table")
    assert response.status_code == 204, await text(response)
    assert "users-changed" in triggers(response)
    after = await user_row(db, them["id"])
    assert after.deleted_at is None
    assert (after.username, after.email, after.role, after.active, after.password_hash, after.created_at) == (
        before.username, before.email, before.role, before.active, before.password_hash, before.created_at)
    [event] = await audits(db, "restore", them["id"])
    assert event.actor_id == me["id"]
    assert "Returner" in await text(await client.get("/users"))

    # The password still works (the account was inactive: activate it to log in).
    async with db.write() as conn:
        await conn.execute(update(users).where(users.c.id == them["id"]).values(active=True))
    await login_ok(app.test_client(), "Returner")


async def test_a_restored_user_can_log_in_again(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="comeback")
    assert (await send(client, f"/users/{them['id']}/delete", {"back": "/users"}, target="x")).status_code == 200
    assert (await send(client, f"/users/{them['id']}/restore", target="x")).status_code == 204
    await login_ok(app.test_client(), "comeback")


async def test_restoring_a_user_that_is_not_deleted_is_not_found(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    before = await user_row(db, them["id"])
    await assert_refused(await send(client, f"/users/{them['id']}/restore", target="x"), 404)
    await assert_refused(await send(client, "/users/99999/restore", target="x"), 404)
    assert await user_row(db, them["id"]) == before
    assert await audits(db, "restore") == []


# ---- bulk actions ------------------------------------------------------------------------

def bulk_form(action: str, ids) -> list[tuple[str, str]]:
    return [("action", action), ("back", "/users"), *(("ids", str(i)) for i in ids)]


async def test_bulk_deactivate_changes_the_selected_and_records_each(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    a = await make_user("Customer")
    b = await make_user("Customer")
    untouched = await make_user("Customer")
    response = await send(client, "/users/bulk", bulk_form("deactivate", [a["id"], b["id"]]), target="bulk-form")
    assert response.status_code == 200, await text(response)
    assert "users-changed" in triggers(response)
    assert "Deactivated 2" in toasts(response, "success")[0]["text"]
    assert not (await user_row(db, a["id"])).active
    assert not (await user_row(db, b["id"])).active
    assert (await user_row(db, untouched["id"])).active
    events = await audits(db, "update")
    assert sorted(e.target_id for e in events) == sorted([a["id"], b["id"]])
    assert all(e.changes == {"active": [True, False]} and e.actor_id == me["id"] for e in events)
    assert (await user_row(db, a["id"])).version == 2


async def test_bulk_role_change_by_an_admin(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    a, b = await make_user("Customer"), await make_user("Customer")
    response = await send(client, "/users/bulk", bulk_form("role:Manager", [a["id"], b["id"]]), target="bulk-form")
    assert response.status_code == 200, await text(response)
    assert (await user_row(db, a["id"])).role == "Manager"
    assert (await user_row(db, b["id"])).role == "Manager"
    assert len(await audits(db, "update")) == 2


async def test_bulk_role_change_by_a_manager_is_refused(app, db, make_user):
    _, client = await signed_in(app, make_user, "Manager")
    a, b = await make_user("Customer"), await make_user("Customer")
    before = snapshot(await all_users(db))
    response = await send(client, "/users/bulk", bulk_form("role:Manager", [a["id"], b["id"]]), target="bulk-form")
    await assert_refused(response, 403)
    assert snapshot(await all_users(db)) == before


async def test_bulk_delete_including_yourself_changes_nothing(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    await make_user("Admin")
    a = await make_user("Customer")
    before = snapshot(await all_users(db))
    audits_before = await audit_count(db)
    response = await send(client, "/users/bulk", bulk_form("delete", [a["id"], me["id"]]), target="bulk-form")
    await assert_refused(response, 409, "your own account")
    assert snapshot(await all_users(db)) == before
    assert await audit_count(db) == audits_before


async def test_bulk_demoting_every_active_admin_changes_nothing(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    other = await make_user("Admin")
    a = await make_user("Customer")
    before = snapshot(await all_users(db))
    for action in ("role:Customer", "role:Manager", "deactivate"):
        response = await send(client, "/users/bulk", bulk_form(action, [a["id"], other["id"], me["id"]]),
                              target="bulk-form")
        await assert_refused(response, 409, LAST_ADMIN)
    assert snapshot(await all_users(db)) == before
    assert await audits(db, "update") == []


async def test_bulk_demoting_some_admins_works(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    other = await make_user("Admin")
    response = await send(client, "/users/bulk", bulk_form("role:Manager", [other["id"]]), target="bulk-form")
    assert response.status_code == 200
    assert (await user_row(db, other["id"])).role == "Manager"


async def test_a_manager_bulk_on_a_selection_with_staff_changes_nothing(app, db, make_user):
    _, client = await signed_in(app, make_user, "Manager")
    a = await make_user("Customer")
    admin = await make_user("Admin")
    before = snapshot(await all_users(db))
    for action in ("deactivate", "delete"):
        response = await send(client, "/users/bulk", bulk_form(action, [a["id"], admin["id"]]), target="bulk-form")
        await assert_refused(response, 403)
    assert snapshot(await all_users(db)) == before
    assert await audit_count(db) == 0
    assert len(await audit_rows(db, "refused")) == 2


async def test_a_manager_bulk_deletes_customers_and_ends_their_sessions(app, db, make_user):
    _, client = await signed_in(app, make_user, "Manager")
    a, b = await make_user("Customer"), await make_user("Customer")
    victim = app.test_client()
    await open_session(app, victim, a["id"])
    response = await send(client, "/users/bulk", bulk_form("delete", [a["id"], b["id"]]), target="bulk-form")
    assert response.status_code == 200, await text(response)
    assert (await user_row(db, a["id"])).deleted_at is not None
    assert (await user_row(db, b["id"])).deleted_at is not None
    assert await session_rows(db, a["id"]) == []
    assert len(await audits(db, "delete")) == 2


@pytest.mark.parametrize("form", [
    [("action", "deactivate"), ("back", "/users")],                     # nothing selected
    [("action", "explode"), ("back", "/users"), ("ids", "IDS")],      # unknown action
    [("action", ""), ("ids", "IDS")],
    [("action", "role:Root"), ("ids", "IDS")],
    [("action", "deactivate"), ("ids", "abc")],
])
async def test_bulk_without_a_selection_or_a_known_action_is_a_bad_request(app, db, make_user, form):
    _, client = await signed_in(app, make_user, "Admin")
    a = await make_user("Customer")
    form = [(k, str(a["id"]) if v == "IDS" else v) for k, v in form]
    before = snapshot(await all_users(db))
    await assert_refused(await send(client, "/users/bulk", form, target="bulk-form"), 400)
    assert snapshot(await all_users(db)) == before


async def test_a_plain_bulk_redirects_back(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    a = await make_user("Customer")
    form = [("action", "deactivate"), ("back", "/users?role=Customer"), ("ids", str(a["id"]))]
    response = await send(client, "/users/bulk", form, hx=False)
    assert response.status_code == 303
    assert location(response) == "/users?role=Customer"
    assert not (await user_row(db, a["id"])).active


# ---- without JavaScript ------------------------------------------------------------------

async def test_a_plain_edit_link_shows_the_page_with_the_row_in_edit_mode(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="plainedit")
    other = await make_user("Customer", username="bystander")
    response = await client.get(edit_url(them["id"]) + "?sort=email")
    body = await text(response)
    assert response.status_code == 200
    assert "<html" in body and 'id="users-table"' in body
    assert re.search(rf'<tr id="user-{them["id"]}" class="user-row editing', body)
    assert input_value(body, "back") == "/users?sort=email"
    assert input_value(body, "version") == "1"
    assert f'id="edit-{them["id"]}-username"' in body
    assert re.search(rf'<tr id="user-{other["id"]}" class="user-row"', body)  # the others stay rows
    assert f'<form id="edit-{them["id"]}-form" method="post" action="/users/{them["id"]}"' in body



async def test_a_plain_edit_page_prefills_the_row(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Manager", username="plainedit", email="plainedit@example.com")
    body = await text(await client.get(edit_url(them["id"])))
    assert input_value(body, "username") == "plainedit"
    assert input_value(body, "email") == "plainedit@example.com"
    assert re.search(r'<option value="Manager" selected>', body)
    assert "checked" in re.search(r'<input type="checkbox" name="active"[^>]*>', body).group(0)


async def test_a_plain_save_redirects_back_to_the_table(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    before = await user_row(db, them["id"])
    response = await send(client, f"/users/{them['id']}",
                          edit_form(before, username="plainsaved", back="/users?q=pl&sort=email&dir=desc"), hx=False)
    assert response.status_code == 303
    assert location(response) == "/users?q=pl&sort=email&dir=desc"
    assert (await user_row(db, them["id"])).username == "plainsaved"
    page = await text(await client.get(location(response)))
    assert "Saved plainsaved" in page


@pytest.mark.parametrize("back, expected", [
    ("https://evil.example/users?q=pl", "/users?q=pl"),
    ("//evil.example/?role=Customer", "/users?role=Customer"),
    ("", "/users"),
])
async def test_a_plain_save_only_ever_goes_back_to_the_users_table(app, db, make_user, back, expected):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    before = await user_row(db, them["id"])
    response = await send(client, f"/users/{them['id']}", edit_form(before, username="moved", back=back), hx=False)
    assert response.status_code == 303
    assert location(response) == expected


async def test_cancelling_an_edit_returns_the_plain_row(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="cancelme")
    response = await client.get(f"/users/{them['id']}/row", headers=htmx(f"user-{them['id']}"))
    body = await text(response)
    assert response.status_code == 200
    assert body.lstrip().startswith("<tr") and "data-editing" not in body
    assert 'data-action="open">cancelme</a></td>' in body
    plain = await client.get(f"/users/{them['id']}/row?q=ca")
    assert plain.status_code in (302, 303) and location(plain) == "/users?q=ca"


async def test_a_plain_save_with_errors_shows_the_page_with_the_messages(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    before = await user_row(db, them["id"])
    response = await send(client, f"/users/{them['id']}", edit_form(before, email="nope"), hx=False)
    body = await text(response)
    assert response.status_code == 422
    assert "<html" in body
    assert element_text(body, f"edit-{them['id']}-email-error")
    assert await user_row(db, them["id"]) == before


async def test_a_plain_save_with_errors_keeps_the_typed_values(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    before = await user_row(db, them["id"])
    response = await send(client, f"/users/{them['id']}", edit_form(before, username="typedname", email="nope"),
                          hx=False)
    body = await text(response)
    assert response.status_code == 422
    assert input_value(body, "email") == "nope"
    assert input_value(body, "username") == "typedname"


async def test_a_plain_create_with_errors_keeps_the_typed_values(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    response = await send(client, "/users", {**NEW, "username": "x"}, hx=False)
    body = await text(response)
    assert response.status_code == 422
    assert "3 to 32" in element_text(body, "new-username-error")
    assert input_value(body, "username") == "x"
    assert input_value(body, "email") == "newbie@example.com"


async def test_a_plain_delete_link_asks_for_confirmation_in_a_page(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="confirmme")
    response = await client.get(f"/users/{them['id']}/delete?q=co")
    body = await text(response)
    assert response.status_code == 200
    assert "<html" in body and "confirmme" in body
    form = re.search(rf'<form method="post" action="/users/{them["id"]}/delete".*?</form>', body, re.S).group(0)
    assert unmask(input_value(form, "csrf_token")) == unmask(await csrf(client))
    assert input_value(form, "back") == "/users?q=co"
    assert (await user_row(db, them["id"])).deleted_at is None


async def test_a_plain_create_goes_back_to_the_table_it_came_from(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    response = await send(client, "/users", {**NEW, "back": "/users?q=new"}, hx=False)
    assert response.status_code == 303
    assert location(response) == "/users?q=new"
    page = await text(await client.get(location(response)))
    assert "Invited newbie: we sent a link to newbie@example.com." in page
    assert (await user_named(db, "newbie")).invited_at is not None


# ---- CSRF --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/users", "/users/{id}", "/users/{id}/delete", "/users/{id}/restore", "/users/bulk"])
@pytest.mark.parametrize("hx", [True, False])
async def test_every_users_post_needs_the_csrf_token(app, db, make_user, path, hx):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    row = await user_row(db, them["id"])
    await csrf(client)  # the client has a token; it just does not send it
    form = {**edit_form(row, username="forged", active=False), **NEW, "action": "delete", "ids": str(them["id"])}
    before = snapshot(await all_users(db))
    for extra in ({}, {"csrf_token": "forged-token"}):
        response = await send(client, path.format(id=them["id"]), {**form, **extra}, target="x", hx=hx, with_csrf=False)
        assert response.status_code == 403, (path, extra)
    assert snapshot(await all_users(db)) == before
    assert await audit_count(db) == 0
