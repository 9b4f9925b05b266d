"""Reverting a change from the audit log, over HTTP on both databases: through the users
table's own write (version check, last-Admin guard, who may change whom, audit), with a
conflict view when a field changed since, deletes reverted by restore, and the page flow
without JavaScript."""
import asyncio
import re

from sqlalchemy import delete, select

from helpers import (
    assert_refused, audit_rows, htmx, location, page, rows, send, signed_in, signed_in_as, text, toasts,
    user_row,
)
from web.core.tables import audit_events, users
from web.users.edits import LAST_ADMIN


def edit_form(row, **changes) -> dict:
    """What the users table's edit row posts for `row`, with `changes` typed in."""
    values = {"version": str(row.version), "username": row.username, "email": row.email,
              "role": row.role, "active": row.active, "back": "/users", **changes}
    return {k: ("1" if v is True else v) for k, v in values.items() if v is not False}


async def edited(client, db, user_id: int, **changes):
    """Saves `changes` to the user through the users table; returns the update event."""
    response = await send(client, f"/users/{user_id}", edit_form(await user_row(db, user_id), **changes),
                          target=f"user-{user_id}")
    assert response.status_code == 200, (response.status_code, await text(response))
    return (await audit_rows(db, "update"))[-1]


def revert_form(version: int, *fields: str, force: bool = False, back: str = "/audit") -> list:
    pairs = [("field", f) for f in fields] + [("version", str(version)), ("back", back)]
    return pairs + [("force", "1")] if force else pairs


async def revert(client, event_id: int, form, hx: bool = True):
    return await send(client, f"/audit/{event_id}/revert", form, target=f"event-{event_id}", hx=hx)


async def event_count(db) -> int:
    return len(await rows(db, select(audit_events.c.id)))


def offers_revert(html: str, event_id: int) -> bool:
    return f'href="/audit/{event_id}/revert' in html


async def test_revert_all_fields_sets_them_back_and_links_the_event(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="kim", email="kim@example.org")
    event = await edited(client, db, them["id"], username="kim.lee", email="lee@example.org")

    log = await page(client, "/audit")
    assert offers_revert(log, event.id)
    form = await client.get(f"/audit/{event.id}/revert", headers=htmx(f"event-{event.id}"))
    body = await text(form)
    assert form.status_code == 200 and body.lstrip().startswith(f'<tr id="event-{event.id}"')
    assert len(re.findall(r'name="field" value="(username|email)"[^>]* checked', body)) == 2

    version = (await user_row(db, them["id"])).version
    response = await revert(client, event.id, revert_form(version, "username", "email"))
    assert response.status_code == 200, await text(response)
    assert response.headers["HX-Retarget"] == "#audit-table"
    after = await user_row(db, them["id"])
    assert (after.username, after.email, after.version) == ("kim", "kim@example.org", version + 1)
    undo = (await audit_rows(db, "update"))[-1]
    assert undo.changes == {"username": ["kim.lee", "kim"], "email": ["lee@example.org", "kim@example.org"],
                            "reverts": [None, event.id]}
    assert undo.actor_id == me["id"]
    assert "reverted" in toasts(response)[0]["text"]
    # The log comes back in place: the new event links the one it reverted, focus goes back to it.
    table = await text(response)
    assert f'reverts <a href="/audit/{event.id}"' in table
    assert re.search(rf'<tr id="event-{event.id}"[^>]*tabindex="0"[^>]* autofocus', table)
    single = await page(client, f"/audit/{event.id}")
    assert f"Event #{event.id}" in single and single.count('<tr id="event-') == 1


async def test_revert_chosen_fields_only(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="kim", email="kim@example.org")
    event = await edited(client, db, them["id"], username="kim.lee", email="lee@example.org")
    version = (await user_row(db, them["id"])).version
    response = await revert(client, event.id, revert_form(version, "email"))
    assert response.status_code == 200, await text(response)
    after = await user_row(db, them["id"])
    assert (after.username, after.email) == ("kim.lee", "kim@example.org")
    assert (await audit_rows(db, "update"))[-1].changes == {
        "email": ["lee@example.org", "kim@example.org"], "reverts": [None, event.id]}

    none_chosen = await revert(client, event.id, revert_form(after.version))
    assert none_chosen.status_code == 422
    assert "Choose at least one field" in await text(none_chosen)


async def test_a_field_changed_since_shows_the_conflict_and_restore_anyway_writes(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", email="first@example.org")
    event = await edited(client, db, them["id"], email="second@example.org")
    await edited(client, db, them["id"], email="third@example.org")
    before = await user_row(db, them["id"])
    events = await event_count(db)

    response = await revert(client, event.id, revert_form(before.version, "email"))
    body = await text(response)
    assert response.status_code == 409
    assert "Changed since: now <strong>third@example.org</strong>; this event made it second@example.org" in body
    assert "restore <ins>first@example.org</ins>" in body
    assert 'name="force" value="1"' in body and "Restore anyway" in body and 'data-action="cancel"' in body
    assert await user_row(db, them["id"]) == before and await event_count(db) == events

    version = re.search(r'name="version" value="(\d+)"', body).group(1)
    response = await revert(client, event.id, revert_form(int(version), "email", force=True))
    assert response.status_code == 200, await text(response)
    assert (await user_row(db, them["id"])).email == "first@example.org"
    assert (await audit_rows(db, "update"))[-1].changes == {
        "email": ["third@example.org", "first@example.org"], "reverts": [None, event.id]}


async def test_a_concurrent_save_and_revert_one_wins_the_other_gets_a_conflict(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", email="first@example.org")
    event = await edited(client, db, them["id"], email="second@example.org")
    seen = await user_row(db, them["id"])  # both forms were shown at this version
    save, undo = await asyncio.gather(
        send(client, f"/users/{them['id']}", edit_form(seen, active=False), target=f"user-{them['id']}"),
        revert(client, event.id, revert_form(seen.version, "email")))
    assert sorted([save.status_code, undo.status_code]) == [200, 409], (save.status_code, undo.status_code)
    after = await user_row(db, them["id"])
    assert after.version == seen.version + 1
    if undo.status_code == 409:
        assert (after.email, after.active) == ("second@example.org", False)
        assert "Someone else saved" in await text(undo)
    else:
        assert (after.email, after.active) == ("first@example.org", True)
    assert len(await audit_rows(db, "update")) == 2


async def test_the_last_admin_guard_holds_through_a_revert(app, db, make_user):
    root, root_client = await signed_in(app, make_user, "Admin", username="root")
    bob = await make_user("Customer", username="bob")
    promotion = await edited(root_client, db, bob["id"], role="Admin")
    bob_client = await signed_in_as(app, bob["id"])
    await edited(bob_client, db, root["id"], role="Customer")  # bob is the last active Admin now
    before = await user_row(db, bob["id"])
    response = await revert(bob_client, promotion.id, revert_form(before.version, "role"))
    assert response.status_code == 422
    assert LAST_ADMIN in await text(response)
    assert await user_row(db, bob["id"]) == before


async def test_a_manager_may_not_revert_a_role_change_or_a_change_to_staff(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    _, manager = await signed_in(app, make_user, "Manager")
    customer = await make_user("Customer")
    await edited(admin, db, customer["id"], role="Manager")
    demotion = await edited(admin, db, customer["id"], role="Customer")
    other_admin = await make_user("Admin")
    staff_change = await edited(admin, db, other_admin["id"], email="new.admin@example.org")
    mine = await edited(manager, db, customer["id"], email="ok@example.org")

    log = await page(manager, "/audit")
    assert not offers_revert(log, demotion.id) and not offers_revert(log, staff_change.id)
    assert offers_revert(log, mine.id)
    users_before = await rows(db, select(users).order_by(users.c.id))
    events = await event_count(db)
    for event in (demotion, staff_change):
        assert (await manager.get(f"/audit/{event.id}/revert")).status_code == 403
        version = (await user_row(db, event.target_id)).version
        fields = list(event.changes)
        await assert_refused(await revert(manager, event.id, revert_form(version, *fields)), 403, "Managers revert")
    assert await rows(db, select(users).order_by(users.c.id)) == users_before
    assert await event_count(db) == events + 4  # the four refusals, audited as such
    assert len(await audit_rows(db, "refused")) == 4


async def test_a_delete_is_reverted_by_restore(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="gone.soon")
    response = await send(client, f"/users/{them['id']}/delete", {"back": "/users"})
    assert response.status_code == 200
    deletion = (await audit_rows(db, "delete"))[-1]
    assert offers_revert(await page(client, "/audit"), deletion.id)
    form = await text(await client.get(f"/audit/{deletion.id}/revert", headers=htmx(f"event-{deletion.id}")))
    assert "Restore gone.soon" in form

    response = await revert(client, deletion.id, [("back", "/audit")])
    assert response.status_code == 200, await text(response)
    assert (await user_row(db, them["id"])).deleted_at is None
    restored = (await audit_rows(db, "restore"))[-1]
    assert restored.changes == {"deleted": [True, False], "reverts": [None, deletion.id]}
    # Restored already: nothing left to revert.
    assert not offers_revert(await page(client, "/audit"), deletion.id)
    await assert_refused(await revert(client, deletion.id, [("back", "/audit")]), 409, "not deleted any more")


async def test_events_that_cannot_be_reverted_offer_no_control(app, db, make_user):
    me, client = await signed_in(app, make_user, "Admin")
    created = await send(client, "/users", {"username": "new.one", "email": "new.one@example.org",
                                            "role": "Customer", "back": "/users"}, target="user-new")
    assert created.status_code == 200
    purged = await make_user("Customer")
    update = await edited(client, db, purged["id"], email="soon.purged@example.org")
    async with db.write() as conn:
        await conn.execute(delete(users).where(users.c.id == purged["id"]))
    export = await client.get("/audit.csv", headers={"Sec-Fetch-Site": "same-origin"})
    assert export.status_code == 200
    await export.get_data()

    log = await page(client, "/audit")
    others = await rows(db, select(audit_events).where(audit_events.c.action.in_(("create", "export"))))
    assert len(others) == 2
    for event in (*others, update):
        assert not offers_revert(log, event.id), event.action
    assert 'data-action="revert"' not in log
    for event in others:
        assert (await client.get(f"/audit/{event.id}/revert")).status_code == 404
    response = await client.get(f"/audit/{update.id}/revert")
    assert response.status_code == 404 and "purged for good" in await text(response)
    assert (await client.get("/audit/99999999/revert")).status_code == 404
    assert (await client.get(f"/audit/{2**70}/revert")).status_code == 404


async def test_without_javascript_the_page_flow_reverts(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", email="first@example.org")
    event = await edited(client, db, them["id"], email="second@example.org", active=False)
    back = "/audit?action=update"
    log = await page(client, back)
    assert f'href="/audit/{event.id}/revert?action=update"' in log
    form = await page(client, f"/audit/{event.id}/revert?action=update")
    assert "<html" in form and f'action="/audit/{event.id}/revert"' in form
    assert f'name="back" value="{back}"' in form.replace("&amp;", "&")
    version = (await user_row(db, them["id"])).version

    response = await revert(client, event.id, revert_form(version, "email", "active", back=back), hx=False)
    assert response.status_code == 303 and location(response) == back
    after = await user_row(db, them["id"])
    assert (after.email, after.active) == ("first@example.org", True)
    assert "Event #%d reverted" % event.id in await page(client, back)

    # A conflict is a page too, and Restore anyway from it writes.
    await edited(client, db, them["id"], email="third@example.org")
    response = await revert(client, event.id, revert_form(after.version + 1, "email", back=back), hx=False)
    body = await text(response)
    assert response.status_code == 409 and "<html" in body and "Restore anyway" in body
    version = int(re.search(r'name="version" value="(\d+)"', body).group(1))
    response = await revert(client, event.id, revert_form(version, "email", force=True, back=back), hx=False)
    assert response.status_code == 303
    assert (await user_row(db, them["id"])).email == "first@example.org"


async def test_a_revert_without_the_csrf_token_is_refused(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", email="first@example.org")
    event = await edited(client, db, them["id"], email="second@example.org")
    version = (await user_row(db, them["id"])).version
    response = await send(client, f"/audit/{event.id}/revert", revert_form(version, "email"), with_csrf=False)
    assert response.status_code == 403
    assert (await user_row(db, them["id"])).email == "second@example.org"
