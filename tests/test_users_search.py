"""The users table's search: any part of a username or email, any case, from three characters
(shorter: the start only), through a trigram index on both databases (SQLite's FTS5 table kept
in step by triggers, PostgreSQL's pg_trgm indexes), whatever the user types."""
import re
from urllib.parse import urlencode

import pytest
from sqlalchemy import select, update

from helpers import page, page_and_statements, pager_link, rows, send, signed_in, total_shown
from test_users_table import expected_order, listed, soft_delete, walk_forward
from web.accounts import queries as accounts
from web.accounts.validation import normalise_email
from web.core.db import utcnow
from web.core.demo import add_demo_users
from web.core.tables import users
from web.users.queries import PAGE_SIZE, SUBSTRING_MIN


def search_url(term: str, **more: str) -> str:
    return "/users?" + urlencode({"q": term, **more})


async def live_users(db):
    return await rows(db, select(users).where(users.c.deleted_at.is_(None)))


def containing(people, term: str) -> set[str]:
    """What the search must find: the usernames of those whose username or email holds `term`."""
    return {u.username for u in people if term.lower() in u.username.lower() or term.lower() in u.email.lower()}


async def found(client, term: str, **more: str) -> set[str]:
    """The usernames the table lists for `term` on all its pages, checked against the count it shows."""
    url = search_url(term, **more)
    pages, _ = await walk_forward(client, url)
    shown = [name for p in pages for name in p]
    assert len(shown) == len(set(shown)) == total_shown(await page(client, url)), term
    return set(shown)


@pytest.fixture
async def cast(make_user):
    """Accounts whose addresses hold what a search box must take literally (the email check
    accepts % _ * ' { } ^ + and non-ASCII letters before the @)."""
    people = {}
    for username, email in (
        ("Alice.Smith", "asmith@example.com"),
        ("alfred", "Fred.Jones@Example.org"),
        ("bob", "ALbert.bob@mail.example.net"),
        ("zoe.unal", "Zoë.Ünal@example.com"),
        ("percent", "x%y@example.com"),
        ("underscore", "x_y@example.com"),
        ("xzy", "xzy@example.com"),
        ("near_and_or", "near.and.or@example.com"),
        ("quote", "o'neil*star@example.com"),
        ("braces", "{near}^caret+tag@example.com"),
        ("dash-minus", "minus-sign@example.com"),
    ):
        normalised, problem = normalise_email(email)
        assert problem is None and normalised.split("@")[0] == email.split("@")[0], email
        people[username] = await make_user("Customer", username=username, email=normalised)
    return people


@pytest.fixture
async def admin(app, make_user, cast):
    _, client = await signed_in(app, make_user, "Admin", username="root", email="root@corp.example.org")
    return client


# ---- what is found -----------------------------------------------------------------------

@pytest.mark.parametrize("term, expected", [
    ("ice.Sm", {"Alice.Smith"}),                    # the middle of a username
    ("LFRE", {"alfred"}),                           # any case
    ("jones@", {"alfred"}),                         # the middle of an email
    ("EXAMPLE.ORG", {"alfred", "root"}),
    ("bert.bob@mail", {"bob"}),
    ("mith@example.com", {"Alice.Smith"}),          # the end of the address
    ("zoë", {"zoe.unal"}),                          # non-ASCII letters, any case
    ("ZOË.ÜN", {"zoe.unal"}),
    ("ünal@", {"zoe.unal"}),
    ("oe.ün", set()),                               # accents count: oe is not oë
    ("nobody-has-this", set()),
])
async def test_any_part_of_a_username_or_email_is_found_in_any_case(admin, term, expected):
    assert await found(admin, term) == expected


@pytest.mark.parametrize("term", ["x%y", "x_y", "%%%", "___", "_y@", "%@e", "a\\b", "\\%y", "x\\_y", "\\\\\\"])
async def test_like_wildcards_typed_by_the_user_match_only_themselves(db, admin, term):
    assert await found(admin, term) == containing(await live_users(db), term)


@pytest.mark.parametrize("term", [
    '"', '"""', 'o"neil', "o'neil", "near", "NEAR(near and)", "near and or", "and", "OR bob", "AND",
    "star*", "*star", "neil*star", "-sign", "minus -sign", "username:bob", "email : x", "{near}", "^caret",
    "+tag", "(bob)", 'bob" OR "alice', "ali* OR bob*", "NOT bob", "near/3",
])
async def test_fts_syntax_typed_by_the_user_is_text_to_find(db, admin, term):
    assert await found(admin, term) == containing(await live_users(db), term)


@pytest.mark.parametrize("term, expected", [
    ("al", {"Alice.Smith", "alfred", "bob"}),   # bob's address starts with ALbert
    ("AL", {"Alice.Smith", "alfred", "bob"}),
    ("ob", set()),                              # inside bob, but at the start of nothing
    ("x%", {"percent"}),
    ("x_", {"underscore"}),                     # _ is no wildcard: not xzy
    ("z", {"zoe.unal"}),
    ("zo", {"zoe.unal"}),
    ('"', set()),
    ("%", set()),
])
async def test_one_or_two_characters_find_the_start_of_a_username_or_email(admin, term, expected):
    assert len(term) < SUBSTRING_MIN
    assert await found(admin, term) == expected


async def test_search_combines_with_the_filters(db, admin, cast):
    async with db.write() as conn:
        await conn.execute(update(users).where(users.c.id == cast["xzy"]["id"]).values(active=False))
    assert await found(admin, "@example.com") == containing(await live_users(db), "@example.com")
    assert await found(admin, "@example.com", active="0") == {"xzy"}
    assert await found(admin, "example", role="Admin") == {"root"}


# ---- the index follows the users table ---------------------------------------------------

async def test_soft_deleted_users_are_not_found_nor_counted(db, admin, cast):
    await soft_delete(db, cast["percent"]["id"])
    assert await found(admin, "percent") == set()
    assert await found(admin, "x%y") == set()
    assert await found(admin, "@example.com") == containing(await live_users(db), "@example.com")
    assert "percent" not in containing(await live_users(db), "@example.com")


async def test_a_renamed_user_is_found_by_the_new_name_and_address_only(db, admin, cast):
    bob = (await rows(db, select(users).where(users.c.id == cast["bob"]["id"])))[0]
    form = {"version": str(bob.version), "username": "robert.tables", "email": "Rob@Schools.example.org",
            "role": bob.role, "active": "1", "back": "/users"}
    response = await send(admin, f"/users/{bob.id}", form, target=f"user-{bob.id}")
    assert response.status_code == 200
    assert await found(admin, "bert.bob") == set()
    assert await found(admin, "bob") == set()             # neither the old name nor the old address
    assert await found(admin, "BERT.TAB") == {"robert.tables"}
    assert await found(admin, "ob@school") == {"robert.tables"}
    assert await found(admin, "mail.example.net") == set()


async def test_a_user_deleted_for_good_leaves_nothing_behind_for_a_newcomer(db, admin, make_user):
    """SQLite gives the next user the id of a deleted last row: a search that still knew the old
    row's words would find the newcomer by them."""
    gone = await make_user("Customer", username="gone.for.good", email="vanished@example.com")
    await soft_delete(db, gone["id"])
    async with db.write() as conn:
        assert [row.id for row in await accounts.purge_deleted(conn, utcnow())] == [gone["id"]]
    newcomer = await make_user("Customer", username="newcomer", email="newcomer@example.com")
    if db.is_sqlite:
        assert newcomer["id"] == gone["id"]
    assert await found(admin, "for.good") == set()
    assert await found(admin, "vanished") == set()
    assert await found(admin, "newcomer") == {"newcomer"}


async def test_demo_users_loaded_in_bulk_are_found(db, admin, password_hash):
    await add_demo_users(db, 300, password_hash)
    everyone = await live_users(db)
    for term in ("example.net", ".org", "a.k", "ada.", "mail.ex"):
        assert await found(admin, term) == containing(everyone, term), term


# ---- paging through results --------------------------------------------------------------

@pytest.mark.parametrize("sort, direction", [("username", "asc"), ("created", "desc"), ("role", "asc"),
                                             ("last_login", "desc")])
async def test_pages_of_results_walk_every_match_once_in_order(db, admin, password_hash, sort, direction):
    await add_demo_users(db, 300, password_hash)
    term = "example.org"
    matching = [u for u in await live_users(db) if term in u.email.lower()]
    assert 2 * PAGE_SIZE < len(matching) < 3 * PAGE_SIZE
    first = search_url(term, sort=sort, dir=direction)
    assert total_shown(await page(admin, first)) == len(matching)
    pages, urls = await walk_forward(admin, first)
    assert [len(p) for p in pages] == [PAGE_SIZE, PAGE_SIZE, len(matching) - 2 * PAGE_SIZE]
    assert [name for p in pages for name in p] == expected_order(matching, sort, direction)
    for url in urls[1:]:
        assert f"q={term}" in url
    body = await page(admin, urls[-1])
    back = [listed(body)]
    while url := pager_link(body, "prev"):
        body = await page(admin, url)
        back.append(listed(body))
    assert back[::-1] == pages


# ---- the index is used -------------------------------------------------------------------

async def search_statements(app, client, term: str) -> list[tuple[str, object]]:
    """The page's query and the count's, as run for a search of `term`."""
    body, statements = await page_and_statements(app, client, search_url(term))
    assert listed(body)
    chosen = [(s, p) for s, p in statements if "users_search" in s or " LIKE " in s]
    assert len(chosen) == 2, statements
    return chosen


async def test_sqlite_finds_the_rows_in_the_fts_table_and_reads_only_those(app, db, admin, password_hash):
    if not db.is_sqlite:
        pytest.skip("SQLite's FTS5 table")
    await add_demo_users(db, 300, password_hash)
    for statement, parameters in await search_statements(app, admin, "kim"):
        async with db.read() as conn:
            plan = [row[-1] for row in (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))]
        assert any(re.match(r"SCAN users_search VIRTUAL TABLE INDEX \d+:M", step) for step in plan), plan
        assert any(step.startswith("SEARCH users USING INTEGER PRIMARY KEY (rowid=?)") for step in plan), plan
        assert not any(re.match(r"SCAN users\b", step) for step in plan), plan


async def test_postgresql_finds_the_rows_by_the_trigram_indexes(app, db, admin, password_hash):
    if db.is_sqlite:
        pytest.skip("PostgreSQL's pg_trgm indexes")
    await add_demo_users(db, 300, password_hash)
    for statement, parameters in await search_statements(app, admin, "kim"):
        async with db.write() as conn:
            # Only a bitmap scan is left to the planner: it has one only if the indexes serve
            # the search's conditions; otherwise it must fall back to reading the whole table.
            await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            await conn.exec_driver_sql("SET LOCAL enable_indexscan = off")
            plan = "\n".join((await conn.exec_driver_sql("EXPLAIN " + statement, parameters)).scalars())
        assert "Bitmap Index Scan on ix_users_username_trgm" in plan, plan
        assert "Bitmap Index Scan on ix_users_email_trgm" in plan, plan
        assert "Seq Scan on users" not in plan, plan
