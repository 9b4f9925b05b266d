"""The users table's conveniences: a bulk action on every user a filter matches (in batches,
decided row by row, audited per user), the page size and position in the URL and its links,
"10,000+" where a count would cost too much, and an Undo that keeps the view without JavaScript."""
import re
from html import unescape

import pytest
from sqlalchemy import select

from helpers import (
    audit_rows, location, page, pager_link, rows, send, signed_in, signed_in_as, toasts, user_row,
)
from web.core.demo import add_demo_users
from web.core.tables import users
from web.users import queries, routes


def bulk_over(action: str, view: str) -> list[tuple[str, str]]:
    """The bulk form with "Select all N matching this filter" ticked (no row ticked)."""
    return [("action", action), ("matching", view), ("back", view)]


async def matching_names(db, prefix: str) -> dict[str, object]:
    found = await rows(db, select(users).where(users.c.username.like(f"{prefix}%")))
    return {u.username: u for u in found}


@pytest.fixture
def batches(monkeypatch) -> list[list[int]]:
    """Bulk actions over a filter in batches of 3; the ids of each batch, as chosen."""
    chosen = []

    async def recording(conn, view, after, limit):
        ids = await queries.matching_ids(conn, view, after, limit)
        chosen.append(ids)
        return ids
    monkeypatch.setattr(routes, "BULK_BATCH", 3)
    monkeypatch.setattr(routes, "matching_ids", recording)
    return chosen


async def test_a_bulk_action_over_a_filter_changes_every_match_in_batches_and_audits_each(app, db, make_user, batches):
    me, admin = await signed_in(app, make_user, "Admin", username="root")
    team = [await make_user("Customer", username=f"team{n}") for n in range(7)]
    outsider = await make_user("Customer", username="outsider")

    response = await send(admin, "/users/bulk", bulk_over("deactivate", "/users?q=team"), target="bulk-form")

    assert response.status_code < 300, response.status_code
    assert [len(b) for b in batches] == [3, 3, 1]
    assert not any(u.active for u in (await matching_names(db, "team")).values())
    assert (await user_row(db, outsider["id"])).active
    assert sorted(e.target_id for e in await audit_rows(db, "update")) == sorted(t["id"] for t in team)
    assert toasts(response)[0]["text"] == "Deactivated 7 users."


async def test_a_managers_bulk_over_a_filter_with_staff_changes_only_customers_and_says_so(app, db, make_user):
    _, manager = await signed_in(app, make_user, "Manager", username="mgr")
    customers = [await make_user("Customer", username=f"crew.c{n}") for n in range(3)]
    staff = [await make_user("Admin", username="crew.a"), await make_user("Manager", username="crew.m")]

    response = await send(manager, "/users/bulk", bulk_over("deactivate", "/users?q=crew"), target="bulk-form")

    assert response.status_code < 300
    assert toasts(response)[0]["text"] == ("Deactivated 3 users. 2 Admin or Manager accounts were left as they were: "
                                           "Managers change Customers only.")
    after = await matching_names(db, "crew")
    assert [after[c["username"]].active for c in customers] == [False] * 3
    assert [after[s["username"]].active for s in staff] == [True, True]
    assert {e.target_id for e in await audit_rows(db, "update")} == {c["id"] for c in customers}


async def test_a_bulk_over_a_filter_keeps_the_person_and_the_last_active_admin(app, db, make_user, batches):
    me, admin = await signed_in(app, make_user, "Admin", username="ops.me")
    other = await make_user("Admin", username="ops.other")
    customer = await make_user("Customer", username="ops.customer")

    deleted = await send(admin, "/users/bulk", bulk_over("delete", "/users?q=ops"), target="bulk-form")
    assert "Your own account was left out" in toasts(deleted)[0]["text"]
    assert (await user_row(db, me["id"])).deleted_at is None
    assert (await user_row(db, other["id"])).deleted_at is not None
    assert (await user_row(db, customer["id"])).deleted_at is not None

    demoted = await send(admin, "/users/bulk", bulk_over("role:Customer", "/users?role=Admin"), target="bulk-form")
    assert "ops.me stays the last active Admin." in toasts(demoted)[0]["text"]
    assert (await user_row(db, me["id"])).role == "Admin"


async def test_a_bulk_form_with_neither_rows_nor_a_filter_is_refused(app, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    response = await send(admin, "/users/bulk", [("action", "activate"), ("matching", "")], hx=False)
    assert response.status_code == 400


# ---- page size, position, counts -----------------------------------------------------------

def count_line(html: str) -> str:
    match = re.search(r'<p id="users-count"[^>]*>(.*?)</p>', html, re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", "", match.group(1))).split())


@pytest.fixture
async def sixty(db, make_user, password_hash):
    admin = await make_user("Admin", username="aaa.root")
    await add_demo_users(db, 59, password_hash)
    return admin


async def test_the_page_size_is_chosen_in_the_url_and_kept_by_every_link(app, sixty):
    client = await signed_in_as(app, sixty["id"])

    first = await page(client, "/users?size=25")
    assert len(re.findall(r'<tr id="user-\d+"', first)) == 25
    assert count_line(first) == "1–25 of 60 users"
    assert '<option value="25" selected>' in first
    assert 'name="matching" value="/users?size=25"' in first
    next_url = pager_link(first, "next")
    assert "size=25" in next_url
    for link in re.findall(r'<a href="(/users[^"]*)"[^>]*data-(?:sort|action="open")', first):
        assert "size=25" in unescape(link), link

    second = await page(client, next_url)
    assert count_line(second) == "26–50 of 60 users"
    last = await page(client, pager_link(second, "next"))
    assert count_line(last) == "51–60 of 60 users"
    assert "size=25" in pager_link(last, "prev")

    default = await page(client, "/users?size=7")  # not a size we offer: the default
    assert len(re.findall(r'<tr id="user-\d+"', default)) == 50 and count_line(default) == "1–50 of 60 users"
    assert "size=" not in pager_link(default, "next")


async def test_a_count_past_the_limit_reads_as_a_lower_bound(app, monkeypatch, sixty):
    monkeypatch.setattr(queries, "COUNT_LIMIT", 20)
    client = await signed_in_as(app, sixty["id"])
    body = await page(client, "/users?active=1&size=25")
    assert count_line(body) == "1–25 of 20+ users"
    assert "Select all 20+ users matching this filter" in body


# ---- undo keeps the view ---------------------------------------------------------------------

async def test_undo_without_javascript_returns_to_the_same_view(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    them = await make_user("Customer", username="undone")
    view = "/users?q=und&sort=email&size=25"

    deleted = await send(admin, f"/users/{them['id']}/delete", {"back": view}, hx=False)
    assert deleted.status_code == 303 and location(deleted) == view
    table = await page(admin, view)
    undo = unescape(re.search(r'<form method="post" action="(/users/\d+/restore[^"]*)"', table).group(1))

    restored = await send(admin, undo, hx=False)

    assert restored.status_code == 303 and location(restored) == view
    assert (await user_row(db, them["id"])).deleted_at is None
    assert "Restored undone." in await page(admin, view)
