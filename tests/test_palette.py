"""The command palette's server side: the pages and actions each role is offered (rendered
into every page) and the users it suggests while a name is typed."""
import re

from sqlalchemy import update

from helpers import execute, is_login_redirect, page, signed_in, text
from web.core.db import utcnow
from web.core.tables import users
from web.users.queries import SUGGESTIONS


def offered(html: str) -> dict[str, str]:
    """{label: path} of the palette's pages and actions."""
    dialog = re.search(r'<dialog id="palette".*?</dialog>', html, re.S)
    assert dialog, "no palette on the page"
    return {label: path for path, label in re.findall(
        r'<li id="palette-command-\d+"[^>]*data-href="([^"]+)".*?class="palette-label">([^<]+)<', dialog.group(0), re.S)}


EVERYONE = {"Dashboard": "/dashboard", "Profile and preferences": "/profile",
            "Toggle theme (light or dark)": "/profile/preferences", "Log out": "/logout"}
STAFF = {"Users": "/users", "Audit log": "/audit", "Import users from CSV": "/users/import",
         "New user": "/users/new", "Export the audit log (CSV)": "/audit.csv"}


async def test_a_customer_is_offered_only_what_a_customer_may_do(app, make_user):
    _, client = await signed_in(app, make_user, "Customer")
    html = await page(client, "/dashboard")
    assert offered(html) == EVERYONE
    assert "data-users-url" not in html


async def test_a_manager_is_offered_the_staff_pages_and_actions_and_user_search(app, make_user):
    _, client = await signed_in(app, make_user, "Manager")
    html = await page(client, "/profile")
    assert offered(html) == {**EVERYONE, **STAFF}
    assert 'data-users-url="/users/suggestions"' in html


async def test_an_admin_is_also_offered_the_outbox_where_it_exists(app, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    has_outbox = (await client.get("/mail")).status_code == 200
    expected = {**EVERYONE, **STAFF, **({"Mail outbox": "/mail"} if has_outbox else {})}
    assert offered(await page(client, "/users")) == expected


async def test_a_visitor_gets_no_palette(app):
    assert 'id="palette"' not in await page(app.test_client(), "/login")


async def test_single_key_shortcuts_are_marked_so_that_turning_them_off_hides_them(app, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    html = await page(client, "/dashboard")
    assert re.search(r'class="palette-keys single-key"><kbd>n</kbd>', html)


# ---- users as the palette suggests them --------------------------------------------------

async def suggested(client, q: str) -> list[dict]:
    response = await client.get("/users/suggestions", query_string={"q": q})
    assert response.status_code == 200, await text(response)
    return (await response.get_json())["users"]


async def test_staff_find_users_by_any_part_of_name_or_email(app, make_user):
    wanted = await make_user("Customer", username="zelda.quinn", email="zq@lighthouse.example")
    await make_user("Customer", username="other.person")
    _, client = await signed_in(app, make_user, "Manager")
    expected = [{"id": wanted["id"], "username": "zelda.quinn", "email": "zq@lighthouse.example",
                 "url": f"/users/{wanted['id']}"}]
    assert await suggested(client, "lda.qu") == expected
    assert await suggested(client, "LIGHTHOUSE") == expected
    assert await suggested(client, "zq") == expected  # shorter than a trigram: the start
    assert await suggested(client, "   ") == []


async def test_suggestions_are_few_and_in_username_order(app, make_user):
    for n in range(SUGGESTIONS + 3):
        await make_user("Customer", username=f"batch{n:02d}")
    _, client = await signed_in(app, make_user, "Admin")
    found = await suggested(client, "batch")
    assert [u["username"] for u in found] == [f"batch{n:02d}" for n in range(SUGGESTIONS)]


async def test_deleted_users_are_not_suggested(app, db, make_user):
    gone = await make_user("Customer", username="gone.user")
    await execute(db, update(users).where(users.c.id == gone["id"]).values(deleted_at=utcnow()))
    _, client = await signed_in(app, make_user, "Admin")
    assert await suggested(client, "gone.user") == []


async def test_customers_and_visitors_get_no_suggestions(app, make_user):
    await make_user("Customer", username="findme")
    _, customer = await signed_in(app, make_user, "Customer")
    assert (await customer.get("/users/suggestions?q=findme")).status_code == 403
    assert is_login_redirect(await app.test_client().get("/users/suggestions?q=findme"))
