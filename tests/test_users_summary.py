"""The users table's count and empty state after each write: the answer carries them out of
band (#users-summary), for the view the write came from, so the count never contradicts the
rows (issue 17, point 4)."""
import re

from helpers import csrf, element_html, htmx, page, send, signed_in, text, total_shown, triggers, user_named, user_row

EMPTY = "No users match"
NEW = {"username": "newbie", "email": "newbie@example.com", "role": "Customer"}


def summary(body: str) -> str:
    """The out-of-band summary an answer carries (it must carry one)."""
    match = re.search(r'<div id="users-summary" hx-swap-oob="true">.*?</div>', body, re.S)
    assert match, body[:500]
    return match.group(0)


async def test_the_page_shows_the_empty_state_in_the_summary(app, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    body = await page(client, "/users?q=nobody-here")
    assert EMPTY in element_html(body, "users-summary") and total_shown(body) == 0
    assert EMPTY not in element_html(await page(client, "/users"), "users-summary")


async def test_creating_on_a_view_with_no_matches_shows_the_row_without_the_empty_state(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    response = await send(client, "/users", {**NEW, "back": "/users?q=nobody-here"}, target="user-new")
    body = await text(response)
    assert response.status_code == 200, body
    assert f'id="user-{(await user_named(db, "newbie")).id}"' in body
    assert EMPTY not in summary(body) and total_shown(summary(body)) == 0


async def test_creating_on_the_whole_table_counts_the_new_user(app, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    await make_user("Customer")
    before = total_shown(await page(client, "/users"))
    response = await send(client, "/users", {**NEW, "back": "/users"}, target="user-new")
    assert response.status_code == 200
    assert total_shown(summary(await text(response))) == before + 1
    # A filtered view that the new user matches counts them too.
    response = await send(client, "/users", {**NEW, "username": "newbie2", "email": "n2@example.com",
                                              "back": "/users?q=newbie"}, target="user-new")
    assert total_shown(summary(await text(response))) == 2


async def test_an_edit_that_leaves_the_filter_updates_its_count(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="filtered.one")
    row = await user_row(db, them["id"])
    form = {"version": str(row.version), "username": row.username, "email": row.email, "role": "Manager",
            "active": "1", "back": "/users?role=Customer"}
    response = await send(client, f"/users/{them['id']}", form, target=f"user-{them['id']}")
    body = await text(response)
    assert response.status_code == 200, body
    # The saved row stays where it was, so the table is not empty, whatever the count says.
    assert f'id="user-{them["id"]}"' in body
    assert total_shown(summary(body)) == 0 and EMPTY not in summary(body)


async def test_delete_and_undo_update_the_count_of_the_view(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="only.match")
    view = "/users?q=only.match"
    response = await send(client, f"/users/{them['id']}/delete", {"back": view}, target=f"user-{them['id']}")
    body = await text(response)
    assert response.status_code == 200, body
    assert "users-changed" in triggers(response)  # the rows reload; the count is already right
    assert total_shown(summary(body)) == 0 and EMPTY in summary(body)

    undo = triggers(response)["toast"]["items"][0]["undo"]
    response = await send(client, undo, target="users-table")
    body = await text(response)
    assert response.status_code == 200, body
    assert triggers(response)["users-changed"] == {"focus": them["id"]}
    assert total_shown(summary(body)) == 1 and EMPTY not in summary(body)


async def test_bulk_actions_update_the_count_of_the_view(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    picked = [await make_user("Customer") for _ in range(2)]
    kept = await make_user("Customer")
    before = total_shown(await page(client, "/users?active=1"))
    form = [("action", "deactivate"), ("back", "/users?active=1"), *(("ids", str(u["id"])) for u in picked)]
    response = await send(client, "/users/bulk", form, target="bulk-form")
    assert response.status_code == 200, await text(response)
    assert total_shown(summary(await text(response))) == before - 2
    form = [("action", "delete"), ("back", "/users"), ("ids", str(kept["id"]))]
    whole = total_shown(await page(client, "/users"))
    response = await send(client, "/users/bulk", form, target="bulk-form")
    assert total_shown(summary(await text(response))) == whole - 1


async def test_a_write_from_elsewhere_than_the_table_carries_no_count(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer")
    await send(client, f"/users/{them['id']}/delete", {"back": "/users"}, target=f"user-{them['id']}")
    response = await send(client, f"/users/{them['id']}/restore", {"back": f"/users/{them['id']}"}, target="x")
    assert response.status_code == 204 and "users-changed" in triggers(response)
    assert (await user_row(db, them["id"])).deleted_at is None



async def test_the_count_is_of_the_view_the_page_shows_now(app, db, make_user):
    # Forms drawn outside the table (New user, bulk) keep the `back` of the view they were drawn
    # with; htmx's HX-Current-URL is the page's address, which the filters keep current.
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="shown.one")
    now = {"HX-Current-URL": "http://localhost/users?q=zzz"}
    response = await client.post("/users", form={**NEW, "back": "/users", "csrf_token": await csrf(client)},
                                 headers=htmx("user-new", **now))
    assert response.status_code == 200 and total_shown(summary(await text(response))) == 0
    form = {"action": "deactivate", "back": "/users", "ids": str(them["id"]), "csrf_token": await csrf(client)}
    response = await client.post("/users/bulk", form=form, headers=htmx("bulk-form", **now))
    assert response.status_code == 200 and EMPTY in summary(await text(response))
    # From the user's own page there is no table: the row or nothing, and no count.
    row = await user_row(db, them["id"])
    form = {"version": str(row.version), "username": row.username, "email": row.email, "role": row.role,
            "back": "/users", "csrf_token": await csrf(client)}
    response = await client.post(f"/users/{them['id']}", form=form, headers=htmx(
        f"user-{them['id']}", **{"HX-Current-URL": f"http://localhost/users/{them['id']}"}))
    assert response.status_code == 200 and "users-summary" not in await text(response)


async def test_an_edit_of_what_the_view_does_not_filter_on_carries_no_count(app, db, make_user):
    # The row cannot have entered or left the view, so the count on the page still holds:
    # counting again was most of what a save cost (docs/PERFORMANCE.md).
    _, client = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="renamed.one")
    row = await user_row(db, them["id"])
    form = {"version": str(row.version), "username": "renamed.two", "email": row.email, "role": row.role,
            "active": "1", "back": "/users?role=Customer&active=1"}
    response = await send(client, f"/users/{them['id']}", form, target=f"user-{them['id']}")
    body = await text(response)
    assert response.status_code == 200, body
    assert f'id="user-{them["id"]}"' in body and "users-summary" not in body
    # A search tests the username: renaming may move the row out of it, so it is counted.
    form.update(version=str(row.version + 1), username="renamed.three", back="/users?q=renamed.t")
    response = await send(client, f"/users/{them['id']}", form, target=f"user-{them['id']}")
    assert response.status_code == 200 and total_shown(summary(await text(response))) == 1
