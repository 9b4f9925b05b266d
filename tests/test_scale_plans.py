"""The users table at scale (web/users/queries.py): on SQLite the capped count chooses the
page's plan, gathering the matches and sorting them or walking the sort's index and testing
each row; PostgreSQL plans for itself. Every plan lists the same rows in the same order as the
rule says, for every sort both ways, filter and search, paging on and back; a count past its
cap is labelled so, the whole table's too."""
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from cachetools import LRUCache
from sqlalchemy import insert, select, update

from helpers import rows
from web.core.db import utcnow
from web.core.demo import add_demo_users
from web.core.tables import login_throttle, totp_factors, users
from web.users import queries

SIZE = 25  # one of PAGE_SIZES: the links carry it
VIEWS = [{}, {"role": "Manager"}, {"active": "0"}, {"active": "invited"}, {"active": "locked"}, {"factor": "1"},
         {"factor": "0"}, {"q": "example.org"}, {"q": "a.k"}, {"q": "an"}, {"q": "ada", "role": "Customer"},
         {"q": "no-such-user"}]
SORTED = [(sort, direction) for sort, _ in queries.COLUMNS for direction in ("asc", "desc")]
# Every view by a unique sort and a shared one, and every sort both ways for a filter, a
# search and a view without either.
CASES = [(args, sort, direction) for args in VIEWS for sort, direction in (("username", "asc"), ("created", "desc"))] \
    + [(args, sort, direction) for args in ({}, {"role": "Manager"}, {"q": "example.org"}, {"active": "locked"})
       for sort, direction in SORTED if (sort, direction) not in (("username", "asc"), ("created", "desc"))]
# SQLite: every filtered view gathered and sorted, or every one walked.
PLANS = {"gather": 10**9, "walk": -1}


def matches(user, view: dict, locked: set, with_factor: set) -> bool:
    """The rule each view states, in Python."""
    q = view.get("q", "").lower()
    names = (user.username.lower(), user.email.lower())
    return (user.deleted_at is None
            and (not q or (any(n.startswith(q) for n in names) if len(q) < 3 else any(q in n for n in names)))
            and view.get("role", user.role) == user.role
            and {"0": not user.active, "invited": user.invited_at is not None,
                 "locked": user.id in locked}.get(view.get("active"), True)
            and {"1": user.id in with_factor, "0": user.id not in with_factor}.get(view.get("factor"), True))


def expected(everyone, view: dict, sort: str, direction: str, locked: set, with_factor: set) -> list[int]:
    value = queries.SORTS[sort].value
    ordered = sorted((u for u in everyone if matches(u, view, locked, with_factor)), key=lambda u: (value(u), u.id))
    return [u.id for u in (reversed(ordered) if direction == "desc" else ordered)]


async def walked(db, view: queries.TableState) -> tuple[list[int], list[int], list[int]]:
    """The ids of the first three pages, following each next link; of the page before the last
    of them; and of the page the last one's previous link goes back to."""
    pages = []
    async with db.read() as conn:
        for _ in range(3):
            page = await queries.load_page(conn, view)
            pages.append([r.id for r in page.rows])
            if not page.next_url:
                break
            view = queries.TableState.from_args(dict(parse_qsl(urlsplit(page.next_url).query)))
        back = []
        if page.prev_url:
            previous = queries.TableState.from_args(dict(parse_qsl(urlsplit(page.prev_url).query)))
            back = [r.id for r in (await queries.load_page(conn, previous)).rows]
    return [i for p in pages for i in p], pages[-2] if len(pages) > 1 else [], back


@pytest.fixture
async def people(db, password_hash):
    """100 demo users, some invited, some locked out, some with a second factor."""
    await add_demo_users(db, 100, password_hash)
    now = utcnow()
    async with db.write() as conn:
        ids = list((await conn.execute(select(users.c.id).order_by(users.c.id))).scalars())
        await conn.execute(update(users).where(users.c.id.in_(ids[::10])).values(invited_at=now))
        await conn.execute(update(users).where(users.c.id.in_(ids[5::30])).values(deleted_at=now))
        locked = set(ids[3::20])
        await conn.execute(insert(login_throttle), [
            {"key": f"account:{i}", "failures": 5, "window_start": now, "locked_until": now + timedelta(minutes=5)}
            for i in locked] + [{"key": f"account:{ids[4]}", "failures": 1, "window_start": now, "locked_until": None},
                                {"key": "ip:203.0.113.9", "failures": 5, "window_start": now,
                                 "locked_until": now + timedelta(minutes=5)}])
        with_factor = set(ids[7::15])
        await conn.execute(insert(totp_factors), [
            {"user_id": i, "key_id": "k1", "secret": "x", "created_at": now, "confirmed_at": now} for i in with_factor])
        # An app set up but never confirmed is no factor.
        await conn.execute(insert(totp_factors).values(user_id=ids[8], key_id="k1", secret="x", created_at=now))
    return await rows(db, select(users)), locked, with_factor


@pytest.mark.parametrize("plan", PLANS)
async def test_every_plan_lists_the_rows_the_rule_says_in_order(db, people, monkeypatch, plan):
    if not db.is_sqlite and plan == "walk":
        pytest.skip("PostgreSQL plans for itself: one run checks its pages")
    monkeypatch.setattr(queries, "WALK_FROM", PLANS[plan])
    everyone, locked, with_factor = people
    for args, sort, direction in CASES:
        view = queries.TableState(**args, sort=sort, dir=direction, size=SIZE)
        want = expected(everyone, args, sort, direction, locked, with_factor)
        seen, before_last, back = await walked(db, view)
        assert seen == want[:3 * SIZE], (args, sort, direction)
        assert back == before_last, (args, sort, direction)


async def test_a_page_statement_is_built_once_for_its_shape_and_takes_cursor_and_time_when_run(
        db, people, monkeypatch):
    everyone, locked, with_factor = people
    monkeypatch.setattr(queries, "_pages", LRUCache(maxsize=256))
    built, build = [], queries._page_query
    monkeypatch.setattr(queries, "_page_query", lambda *shape: built.append(shape) or build(*shape))

    seen, _, _ = await walked(db, queries.TableState(size=SIZE))
    assert seen == expected(everyone, {}, "username", "asc", locked, with_factor)[:3 * SIZE]
    assert len(built) == 3, "one statement each: the first page, the pages after a cursor, the page before one"

    view = queries.TableState(active="locked", size=SIZE)
    async with db.read() as conn:
        assert {r.id for r in (await queries.load_page(conn, view)).rows} == locked - {u.id for u in everyone if u.deleted_at}
        first = await queries.load_page(conn, queries.TableState(size=100))
        assert {r.id for r in first.rows if r.locked_until} == {r.id for r in first.rows} & locked
        statements = len(built)
        monkeypatch.setattr(queries, "utcnow", lambda: utcnow() + timedelta(minutes=10))  # the locks have ended
        assert (await queries.load_page(conn, view)).rows == []
        assert not any(r.locked_until for r in (await queries.load_page(conn, queries.TableState(size=100))).rows)
    assert len(built) == statements, "the kept statements ran again, reading the clock then"


async def test_sqlite_walks_only_past_the_gathering_limit(db, people):
    everyone, locked, with_factor = people
    for args in VIEWS:
        view = queries.TableState(**args)
        count = len(expected(everyone, args, "username", "asc", locked, with_factor))
        chosen = queries.plan(view, "sqlite", count)
        assert chosen == ("gather" if view.filtered and count <= queries.WALK_FROM else "walk"), args
    assert queries.plan(queries.TableState(role="Admin"), "postgresql", 10**6) == ""


@pytest.mark.parametrize("args", [{}, {"role": "Customer"}, {"q": "example"}])
async def test_counts_past_the_cap_are_labelled_so_the_whole_tables_too(db, people, monkeypatch, args):
    monkeypatch.setattr(queries, "COUNT_LIMIT", 20)
    monkeypatch.setattr(queries, "_counts", queries.Recent(0.001, size=8))
    async with db.read() as conn:
        page = await queries.load_page(conn, queries.TableState(**args))
    assert (page.total, page.at_least) == (20, True)
