"""The users admin table over HTTP: who sees it, search and filters, sorting, keyset paging."""
import re
from datetime import datetime, timedelta
from html import unescape

import pytest
from sqlalchemy import select, update

from helpers import (
    assert_no_offset, cursor, htmx, location, page, page_and_statements, pager_link, rows, signed_in,
    signed_in_as, text, total_shown,
)
from web.core.db import utcnow
from web.core.demo import add_demo_users
from web.core.tables import users
from web.users.queries import PAGE_SIZE

NEVER = datetime(1970, 1, 1)


# ---- helpers -----------------------------------------------------------------------------

def listed(html: str) -> list[str]:
    """The usernames of the table's rows, in the order shown."""
    return [unescape(name) for name in re.findall(r'<td class="col-username"><a [^>]*>([^<]*)</a></td>', html)]


async def live_users(db):
    return await rows(db, select(users).where(users.c.deleted_at.is_(None)))


async def soft_delete(db, user_id: int) -> None:
    async with db.write() as conn:
        await conn.execute(update(users).where(users.c.id == user_id).values(deleted_at=utcnow()))


SORT_KEYS = {
    "username": lambda u: (u.username.lower(),),
    "email": lambda u: (u.email.lower(),),
    "role": lambda u: (u.role, u.id),
    "active": lambda u: (u.active, u.id),
    "last_login": lambda u: (u.last_login_at or NEVER, u.id),
    "created": lambda u: (u.created_at, u.id),
}


def expected_order(all_users, sort: str, direction: str) -> list[str]:
    ordered = sorted(all_users, key=SORT_KEYS[sort], reverse=direction == "desc")
    return [u.username for u in ordered]


# ---- who sees the table ------------------------------------------------------------------

@pytest.mark.parametrize("role", ["Admin", "Manager"])
async def test_staff_see_the_users_table_with_its_rows(app, make_user, role):
    customer = await make_user("Customer", username="listed.customer")
    other_admin = await make_user("Admin", username="listed.admin")
    me, client = await signed_in(app, make_user, role)
    response = await client.get("/users")
    body = await text(response)
    assert response.status_code == 200
    assert "<html" in body
    assert sorted(listed(body)) == sorted([customer["username"], other_admin["username"], me["username"]])
    assert f'id="user-{customer["id"]}"' in body
    assert customer["email"] in body


async def test_a_customer_is_refused_the_users_table(app, make_user):
    _, client = await signed_in(app, make_user, "Customer")
    for url in ("/users", "/users?sort=email", "/users/new"):
        response = await client.get(url)
        assert response.status_code == 403, url
        assert "col-username" not in await text(response)


async def test_an_anonymous_visitor_is_sent_to_login_and_back(client):
    response = await client.get("/users")
    assert response.status_code in (302, 303)
    assert location(response) == "/login?next=%2Fusers"


# ---- search and filters ------------------------------------------------------------------

@pytest.fixture
async def cast(make_user, db):
    """A few accounts to search among; `alvin` is soft-deleted."""
    people = {
        "alice": await make_user("Customer", username="Alice.Smith", email="asmith@example.com"),
        "alfred": await make_user("Manager", username="alfred", email="Fred.Jones@Example.org"),
        "bob": await make_user("Customer", username="bob", email="ALbert.bob@mail.test"),
        "carol": await make_user("Customer", username="carol", email="carol@example.com", active=False),
        "dave": await make_user("Manager", username="dave", email="dave@corp.test", active=False),
        "alvin": await make_user("Customer", username="alvin", email="alvin@example.com"),
    }
    await soft_delete(db, people["alvin"]["id"])
    return people


@pytest.fixture
async def admin_client(app, make_user):
    _, client = await signed_in(app, make_user, "Admin", username="root", email="root@corp.test")
    return client


@pytest.mark.parametrize("query, expected", [
    ("q=al", {"Alice.Smith", "alfred", "bob"}),           # username prefix, email prefix of bob
    ("q=AL", {"Alice.Smith", "alfred", "bob"}),           # any case
    ("q=aLiCe", {"Alice.Smith"}),
    ("q=fred", {"alfred"}),                               # only the email starts with it
    ("q=FRED.JONES%40example", {"alfred"}),
    ("q=asmith%40", {"Alice.Smith"}),
    ("q=lice", {"Alice.Smith"}),                          # three characters or more: any part
    ("q=EXAMPLE", {"Alice.Smith", "alfred", "carol"}),
    ("q=ce", set()),                                      # under three: the start only
    ("role=Customer", {"Alice.Smith", "bob", "carol"}),
    ("role=Manager", {"alfred", "dave"}),
    ("role=Admin", {"root"}),
    ("active=0", {"carol", "dave"}),
    ("active=1", {"Alice.Smith", "alfred", "bob", "root"}),
    ("q=al&role=Customer", {"Alice.Smith", "bob"}),
    ("q=al&role=Customer&active=1", {"Alice.Smith", "bob"}),
    ("q=c&active=0", {"carol"}),
    ("role=Manager&active=1", {"alfred"}),
    ("q=d&role=Manager&active=0", {"dave"}),
])
async def test_search_and_filters_choose_the_rows(admin_client, cast, query, expected):
    body = await page(admin_client, f"/users?{query}")
    assert set(listed(body)) == expected
    assert len(listed(body)) == len(expected)
    assert total_shown(body) == len(expected)
    if not expected:
        assert "No users match" in body


async def test_soft_deleted_users_are_never_listed(admin_client, cast):
    for url in ("/users", "/users?q=alvin", "/users?q=alvin%40", "/users?role=Customer",
                "/users?active=1", "/users?sort=created&dir=desc"):
        body = await page(admin_client, url)
        assert "alvin" not in listed(body), url
        assert "alvin@example.com" not in body, url


async def test_the_total_count_is_shown(admin_client, cast):
    body = await page(admin_client, "/users")
    assert total_shown(body) == 6  # five live accounts of the cast and root
    assert re.search(r"\b6 users\b", body)
    body = await page(admin_client, "/users?q=carol")
    assert re.search(r"\b1 user\b", body) and not re.search(r"\b1 users\b", body)


# ---- sorting -----------------------------------------------------------------------------

@pytest.fixture
async def varied(db, make_user, password_hash):
    """An Admin to look, and 40 demo users with mixed roles, states, logins and creation times,
    plus mixed-case names so that sorting must ignore case."""
    admin = await make_user("Admin", username="root", email="root@corp.test")
    await add_demo_users(db, 40, password_hash)
    await make_user("Customer", username="Zed", email="Zed@Example.com")
    await make_user("Customer", username="aaron", email="aaron@zzz.test")
    await make_user("Manager", username="Beth", email="BETH@example.net", active=False)
    async with db.write() as conn:
        await conn.execute(update(users).where(users.c.username == "Zed")
                           .values(last_login_at=utcnow() - timedelta(days=3)))
    return admin


@pytest.mark.parametrize("direction", ["asc", "desc"])
@pytest.mark.parametrize("sort", ["username", "email", "role", "active", "last_login", "created"])
async def test_sorting_by_each_column_orders_the_rows(app, db, varied, sort, direction):
    client = await signed_in_as(app, varied["id"])
    body = await page(client, f"/users?sort={sort}&dir={direction}")
    everyone = await live_users(db)
    assert len(everyone) == 44
    assert listed(body) == expected_order(everyone, sort, direction)
    assert f'aria-sort="{"ascending" if direction == "asc" else "descending"}"' in body


async def test_never_logged_in_users_come_first_when_sorting_by_last_login(app, db, varied):
    client = await signed_in_as(app, varied["id"])
    shown = listed(await page(client, "/users?sort=last_login"))
    never = {u.username for u in await live_users(db) if u.last_login_at is None}
    assert never and len(never) < len(shown)
    assert set(shown[:len(never)]) == never
    shown_desc = listed(await page(client, "/users?sort=last_login&dir=desc"))
    assert set(shown_desc[-len(never):]) == never


# ---- keyset pagination -------------------------------------------------------------------

@pytest.fixture
async def many(db, make_user, password_hash):
    admin = await make_user("Admin", username="root", email="root@corp.test")
    await add_demo_users(db, 130, password_hash)
    return admin


async def walk_forward(client, start: str) -> tuple[list[list[str]], list[str]]:
    """Every page from `start` by its next links: (usernames per page, the URL of each page)."""
    pages, urls, url = [], [], start
    while url:
        body = await page(client, url)
        pages.append(listed(body))
        urls.append(url)
        url = pager_link(body, "next")
        if url:
            assert "after=" in url and "before=" not in url and "offset" not in url.lower()
        assert len(pages) < 20, "the next links do not end"
    return pages, urls


@pytest.mark.parametrize("query, sort, direction", [
    ("sort=username", "username", "asc"),
    ("sort=last_login&dir=desc", "last_login", "desc"),
    ("sort=role", "role", "asc"),
])
async def test_next_and_prev_links_walk_every_row_exactly_once(app, db, many, query, sort, direction):
    client = await signed_in_as(app, many["id"])
    pages, urls = await walk_forward(client, f"/users?{query}")
    walked = [name for p in pages for name in p]
    everyone = await live_users(db)
    assert len(everyone) == 131
    assert [len(p) for p in pages] == [PAGE_SIZE, PAGE_SIZE, 131 - 2 * PAGE_SIZE]
    assert len(walked) == len(set(walked)), "a row was shown twice"
    assert walked == expected_order(everyone, sort, direction)

    # Back again from the last page by the prev links: the same pages in reverse.
    body = await page(client, urls[-1])
    back = [listed(body)]
    assert pager_link(body, "first")
    while url := pager_link(body, "prev"):
        assert "before=" in url and "after=" not in url
        body = await page(client, url)
        back.append(listed(body))
        assert len(back) < 20, "the prev links do not end"
    assert back[::-1] == pages
    assert pager_link(body, "first") is None


async def test_a_page_is_found_without_offset(app, db, many):
    client = await signed_in_as(app, many["id"])
    pages, urls = await walk_forward(client, "/users?sort=last_login&dir=desc")
    body, statements = await page_and_statements(app, client, urls[-1])
    assert listed(body) == pages[-1]
    selects = [s for s, _ in statements if "FROM users" in s and "LIMIT" in s.upper()]
    assert selects, f"the page's query was not seen: {statements}"
    assert_no_offset(statements)


# ---- fragments and bad input -------------------------------------------------------------

async def test_htmx_aimed_at_the_table_gets_only_the_table(admin_client, cast):
    body = await page(admin_client, "/users?q=al", **htmx("users-table"))
    assert 'id="users-table"' in body
    assert "<html" not in body.lower() and "<body" not in body.lower()
    assert 'id="users-filters"' not in body
    assert set(listed(body)) == {"Alice.Smith", "alfred", "bob"}


@pytest.mark.parametrize("query", [
    "after=!!!",
    "before=!!!",
    "after=%25%25%25&sort=last_login",
    "before=bm90IGpzb24&sort=role",  # base64 of "not json"
    "sort=password_hash",
    "sort=nonsense&dir=sideways",
    "dir=up",
    "role=Superuser",
    "active=maybe",
    "page=-3",
    "page=abc",
])
async def test_garbage_in_the_url_falls_back_to_defaults(admin_client, cast, query):
    default = listed(await page(admin_client, "/users"))
    body = await page(admin_client, f"/users?{query}")
    assert len(default) == 6
    if "sort=last_login" in query or "sort=role" in query:
        assert sorted(listed(body)) == sorted(default)
    else:
        assert listed(body) == default


@pytest.mark.parametrize("query", [
    f"sort=last_login&after={cursor('2020-01-01T00:00:00+05:00', 1)}",
    f"sort=created&before={cursor('not a date', 1)}",
    f"sort=active&after={cursor([1, 2], 'x')}",
    f"sort=username&after={cursor({'a': 1}, 2)}",
])
async def test_a_tampered_cursor_does_not_break_the_page(admin_client, cast, query):
    response = await admin_client.get(f"/users?{query}")
    assert response.status_code == 200, (query, response.status_code)


@pytest.mark.parametrize("query", [
    f"sort=role&after={cursor('Customer', 10**20)}",
    f"sort=created&before={cursor('2020-01-01T00:00:00', -10**20)}",
])
async def test_a_cursor_with_an_out_of_range_id_falls_back_to_the_first_page(admin_client, cast, query):
    response = await admin_client.get(f"/users?{query}")
    assert response.status_code == 200, (query, response.status_code)
    assert len(listed(await text(response))) == 6


async def test_a_cursor_id_beyond_32_bits_does_not_break_the_page(admin_client, cast):
    """users.id is a 32-bit INTEGER on PostgreSQL; SQLite's integers have 64 bits."""
    response = await admin_client.get(f"/users?sort=active&after={cursor(True, 2**40)}")
    assert response.status_code == 200
