"""A user's own page, /users/<id>: the account, its lock-out and invitation, where they are
logged in (Admins), their recent history; who sees it and what they may do there. And the
row fragment an edit's Cancel fetches, /users/<id>/row."""
import re
from datetime import timedelta

from sqlalchemy import insert

from helpers import (
    audit_rows, element_html, element_text, htmx, is_login_redirect, location, open_session, page, send, signed_in,
    text, user_named,
)
from web.core.db import utcnow
from web.core.tables import login_throttle


async def lock_out(db, user_id: int) -> None:
    """As if the account had failed too many logins a moment ago."""
    async with db.write() as conn:
        await conn.execute(insert(login_throttle).values(
            key=f"account:{user_id}", failures=10, window_start=utcnow(), locked_until=utcnow() + timedelta(minutes=15)))


async def test_an_admin_sees_the_account_its_state_sessions_and_history(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin", username="ada")
    carla = await make_user("Customer", username="carla", email="carla@example.com")
    await open_session(app, app.test_client(), carla["id"], user_agent="Carla's Laptop")
    await lock_out(db, carla["id"])
    for old, new in (("carla", "carla2"), ("carla2", "carla3")):  # two saves: the later one first below
        await send(admin, f"/users/{carla['id']}", {"username": new, "email": carla["email"], "role": "Customer",
                                                     "active": "1", "version": (await user_named(db, old)).version},
                   hx=False)

    body = await page(admin, f"/users/{carla['id']}")

    account = element_text(body, "user-account")
    for shown in ("carla3", "carla@example.com", "Customer", "Active", "None pending", "Locked"):
        assert shown in account, shown
    assert f'action="/users/{carla["id"]}/unlock"' in body
    assert "Carla&#39;s Laptop" in element_html(body, "user-sessions")
    history = element_html(body, "user-history")
    newest, older = history.split("</ol>")[0].split("<li><time")[1:3]
    assert "carla3" in newest and "carla3" not in older, "newest first"
    assert "by ada" in newest
    assert f'href="/audit?target_type=user&amp;target_id={carla["id"]}"' in body


async def test_an_invited_users_page_says_so_and_offers_the_invitation_actions(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    await send(admin, "/users", {"username": "newbie", "email": "newbie@example.com", "role": "Customer"}, hx=False)
    newbie = await user_named(db, "newbie")

    body = await page(admin, f"/users/{newbie.id}")

    assert "not yet accepted" in element_text(body, "user-account")
    assert f'action="/users/{newbie.id}/invitation/resend"' in body
    assert f'action="/users/{newbie.id}/invitation/revoke"' in body
    assert "is not logged in anywhere" in body


async def test_a_manager_sees_staff_read_only_and_no_ones_sessions(app, make_user):
    _, manager = await signed_in(app, make_user, "Manager")
    boss = await make_user("Admin", username="boss")
    carla = await make_user("Customer", username="carla")

    staff_page = await page(manager, f"/users/{boss['id']}")
    assert "Read-only" in staff_page
    assert f"/users/{boss['id']}/edit" not in staff_page and f"/users/{boss['id']}/delete" not in staff_page
    customer_page = await page(manager, f"/users/{carla['id']}")
    assert f'href="/users/{carla["id"]}/edit?q=carla"' in customer_page
    assert f'href="/users/{carla["id"]}/delete?q=carla"' in customer_page
    for body in (staff_page, customer_page):
        assert 'id="user-sessions"' not in body and 'id="user-history"' in body


async def test_customers_visitors_and_missing_users_get_no_page(app, client, make_user):
    carla = await make_user("Customer", username="carla")
    _, customer = await signed_in(app, make_user, "Customer")
    assert (await customer.get(f"/users/{carla['id']}")).status_code == 403
    assert is_login_redirect(await client.get(f"/users/{carla['id']}"))
    _, admin = await signed_in(app, make_user, "Admin")
    await send(admin, f"/users/{carla['id']}/delete", {"back": "/users"}, hx=False)
    for user_id in (carla["id"], 999_999):
        assert (await admin.get(f"/users/{user_id}")).status_code == 404


async def test_the_row_links_to_the_page_keeping_the_tables_view(app, make_user):
    carla = await make_user("Customer", username="carla")
    _, admin = await signed_in(app, make_user, "Admin")
    table = await page(admin, "/users?q=car&size=25")
    assert f'<a href="/users/{carla["id"]}?q=car&amp;size=25" data-action="open">carla</a>' in table
    body = await page(admin, f"/users/{carla['id']}?q=car&size=25")
    assert 'href="/users?q=car&amp;size=25">Back to users</a>' in body


async def test_the_row_fragment_moved_to_its_own_address(app, make_user):
    carla = await make_user("Customer", username="carla")
    _, admin = await signed_in(app, make_user, "Admin")
    row = await page(admin, f"/users/{carla['id']}/row", **htmx(f"user-{carla['id']}"))
    assert row.lstrip().startswith(f'<tr id="user-{carla["id"]}"') and "<html" not in row
    plain = await admin.get(f"/users/{carla['id']}/row?size=25")
    assert plain.status_code == 303 and location(plain) == "/users?size=25"
    editor = await page(admin, f"/users/{carla['id']}/edit", **htmx(f"user-{carla['id']}"))
    assert f'hx-get="/users/{carla["id"]}/row"' in editor


async def test_unlocking_from_the_page_without_javascript_comes_back_to_it(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    carla = await make_user("Customer", username="carla")
    await lock_out(db, carla["id"])

    response = await send(admin, f"/users/{carla['id']}/unlock", {"back": f"/users/{carla['id']}"}, hx=False)

    assert response.status_code == 303 and location(response) == f"/users/{carla['id']}"
    body = await page(admin, location(response))
    assert "Unlocked carla" in body and "Not locked" in element_text(body, "user-account")
    assert [e.target_id for e in await audit_rows(db, "unlock")] == [carla["id"]]


async def test_a_back_field_never_leads_off_the_users_pages(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    carla = await make_user("Customer", username="carla")
    for back, expected in ((f"//evil.example/users/{carla['id']}", f"/users/{carla['id']}"),
                           ("https://evil.example/x?q=a", "/users?q=a"), ("/users/0", "/users")):
        response = await send(admin, f"/users/{carla['id']}/unlock", {"back": back}, hx=False)
        assert location(response) == expected, back


async def test_an_admin_ends_a_session_from_the_page(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    carla = await make_user("Customer", username="carla")
    sid = await open_session(app, app.test_client(), carla["id"], user_agent="Carla's Phone")
    body = await page(admin, f"/users/{carla['id']}")
    assert re.search(rf'hx-post="/users/{carla["id"]}/sessions/{sid}/end"\s+hx-target="#user-sessions"', body)

    response = await send(admin, f"/users/{carla['id']}/sessions/{sid}/end", target="user-sessions")

    section = await text(response)
    assert section.lstrip().startswith('<section id="user-sessions"') and "carla is not logged in anywhere" in section
