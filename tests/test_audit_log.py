"""The audit log over HTTP: who sees it, filters, keyset pages, htmx fragments, per-user history,
the dashboard's counts, the CSV export (spreadsheet-safe, streamed in flat memory), pruning from
the command line, and that nothing on the web can change or delete an event."""
import asyncio
import csv
import ctypes
import gc
import io
import json
import os
import random
import re
import tracemalloc
from datetime import datetime, timedelta
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from conftest import SECRET
from helpers import (
    assert_no_offset, audit_rows, cursor, event_row, htmx, insert_events, is_login_redirect, location, page,
    page_and_statements, pager_link, rows, run_cli, run_module, scalar, signed_in, signed_in_as, text,
    token,
)
from web.audit.queries import PAGE_SIZE
from web.core.db import utcnow
from web.core.tables import audit_events

BASE = datetime(2024, 3, 1)  # the cast's events happen in the first days of March 2024
CSV_HEADER = ["id", "occurred_at", "actor_id", "actor_name", "action", "target_type", "target_id", "target_name",
              "changes", "ip"]


# ---- helpers -----------------------------------------------------------------------------

async def all_events(db, *where):
    return await rows(db, select(audit_events).where(*where))


def newest_first(events) -> list[int]:
    return [e.id for e in sorted(events, key=lambda e: (e.occurred_at, e.id), reverse=True)]


async def event_count(db) -> int:
    return await scalar(db, select(func.count()).select_from(audit_events))


def shown(html: str) -> list[int]:
    """The ids of the events in the table, in the order shown."""
    return [int(i) for i in re.findall(r'<tr id="event-(\d+)"', html)]


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# ---- who sees the log --------------------------------------------------------------------

@pytest.mark.parametrize("role", ["Admin", "Manager"])
async def test_staff_see_the_log_newest_first(app, db, make_user, role):
    me, client = await signed_in(app, make_user, role)
    times = [BASE + timedelta(hours=h) for h in (5, 1, 9, 3, 9, 7, 1)]  # ties at 9 h and 1 h
    await insert_events(db, [event_row(t, actor=me, ip=f"198.51.100.{n}") for n, t in enumerate(times)])
    body = await page(client, "/audit")
    assert "<html" in body and 'id="audit-table"' in body
    expected = newest_first(await all_events(db))
    assert len(expected) == 7
    assert shown(body) == expected


async def test_a_customer_is_refused_the_log_and_its_export(app, db, make_user):
    me, client = await signed_in(app, make_user, "Customer")
    await insert_events(db, [event_row(BASE, actor=me, action="login", ip="198.51.100.7")])
    for url in ("/audit", "/audit.csv", "/audit?actor=" + me["username"], "/audit?action=login&action=logout",
                f"/audit?target_type=user&target_id={me['id']}", "/audit?since=2024-01-01&until=2024-12-31",
                "/audit.csv?action=login", "/audit?after=!!!"):
        response = await client.get(url)
        assert response.status_code == 403, url
        body = await text(response)
        assert "198.51.100.7" not in body and 'id="audit-table"' not in body, url
    response = await client.get("/audit", headers=htmx("audit-table"))
    assert response.status_code == 403
    assert await audit_rows(db, "export") == [], "a refused export must not be recorded as one"
    refused = await audit_rows(db, "refused")  # but the refusals are, each once
    assert [e.changes["status"] for e in refused] == [[None, 403]] * 9


@pytest.mark.parametrize("url", ["/audit", "/audit.csv", "/audit?actor=root&action=login"])
async def test_an_anonymous_visitor_is_sent_to_login(client, url):
    response = await client.get(url)
    assert is_login_redirect(response), (response.status_code, location(response))
    assert query_of(location(response))["next"] == [url]


# ---- filters -----------------------------------------------------------------------------

@pytest.fixture
async def cast(db, make_user):
    """A staff viewer and three accounts, with events over 1-5 March 2024."""
    people = {
        "root": await make_user("Admin", username="root"),
        "alice": await make_user("Manager", username="Alice"),
        "bob": await make_user("Customer", username="bob"),
        "carol": await make_user("Customer", username="carol"),
    }
    a, b, c, r = people["alice"], people["bob"], people["carol"], people["root"]
    at = lambda day, hour, minute=0: datetime(2024, 3, day, hour, minute)  # noqa: E731
    rows = [
        event_row(at(1, 9), actor=r, action="create", target_id=a["id"], changes={"role": [None, "Manager"]}),
        event_row(at(1, 9), actor=r, action="create", target_id=b["id"]),
        event_row(at(1, 10), actor=b, action="login", target_id=b["id"], ip="192.0.2.10"),
        event_row(at(1, 23, 59), actor=b, action="logout", target_id=b["id"]),
        event_row(at(2, 0, 0), actor=a, action="login", target_id=a["id"]),
        event_row(at(2, 8), actor=a, action="update", target_id=b["id"], changes={"email": ["b@x.test", "b@y.test"]}),
        event_row(at(2, 8, 30), actor=None, action="login_failed", target_id=None, ip="203.0.113.9"),
        event_row(at(3, 0, 0), actor=c, action="login", target_id=c["id"]),
        event_row(at(3, 11, 59), actor=a, action="delete", target_id=c["id"]),
        event_row(at(3, 12, 1), actor=a, action="restore", target_id=c["id"]),
        event_row(at(3, 23, 59), actor=b, action="login", target_id=b["id"]),
        event_row(at(4, 0, 0), actor=b, action="logout", target_id=b["id"]),
        event_row(at(4, 6), actor=r, action="export", target_type="audit"),
        event_row(at(4, 7), actor=a, action="update", target_id=b["id"], changes={"role": ["Customer", "Manager"]}),
        event_row(at(5, 1), actor=c, action="login_failed", target_id=c["id"]),
        event_row(at(5, 2), actor=c, action="login", target_id=c["id"]),
        event_row(at(5, 3), actor=r, action="update", target_id=c["id"], changes={"active": [True, False]}),
    ]
    random.Random(4).shuffle(rows)  # ids do not follow time
    await insert_events(db, rows)
    return people


@pytest.fixture
async def viewer(app, cast):
    return await signed_in_as(app, cast["root"]["id"])


def day(n: int) -> datetime:
    return datetime(2024, 3, n)


# (query with {name} for account ids, which events it should keep)
FILTERS = [
    ("actor=alice", lambda e, p: e.actor_id == p["alice"]),
    ("actor=ALICE", lambda e, p: e.actor_id == p["alice"]),
    ("actor=+Alice+", lambda e, p: e.actor_id == p["alice"]),  # spaces around it are ignored
    ("actor=bob", lambda e, p: e.actor_id == p["bob"]),
    ("action=login", lambda e, p: e.action == "login"),
    ("action=login_failed", lambda e, p: e.action == "login_failed"),
    ("action=login&action=logout", lambda e, p: e.action in ("login", "logout")),
    ("action=create&action=update&action=delete&action=restore",
     lambda e, p: e.action in ("create", "update", "delete", "restore")),
    ("action=login&action=bogus", lambda e, p: e.action == "login"),
    ("target_type=user&target_id={bob}", lambda e, p: (e.target_type, e.target_id) == ("user", p["bob"])),
    ("target_type=audit", lambda e, p: e.target_type == "audit"),
    ("target_id={carol}", lambda e, p: e.target_id == p["carol"]),
    ("since=2024-03-03T12:00", lambda e, p: e.occurred_at >= datetime(2024, 3, 3, 12)),
    ("since=2024-03-04", lambda e, p: e.occurred_at >= day(4)),
    ("until=2024-03-03T12:00", lambda e, p: e.occurred_at < datetime(2024, 3, 3, 12)),
    ("until=2024-03-03", lambda e, p: e.occurred_at < day(4)),  # a bare date: the whole day
    ("since=2024-03-03&until=2024-03-03", lambda e, p: day(3) <= e.occurred_at < day(4)),
    ("since=2024-03-01T23:00&until=2024-03-02T08:00", lambda e, p: datetime(2024, 3, 1, 23) <= e.occurred_at < datetime(2024, 3, 2, 8)),
    ("actor=bob&action=login", lambda e, p: e.actor_id == p["bob"] and e.action == "login"),
    ("actor=bob&action=login&since=2024-03-02", lambda e, p: e.actor_id == p["bob"] and e.action == "login" and e.occurred_at >= day(2)),
    ("actor=alice&target_type=user&target_id={carol}&until=2024-03-03T12:00",
     lambda e, p: e.actor_id == p["alice"] and e.target_id == p["carol"] and e.occurred_at < datetime(2024, 3, 3, 12)),
    ("action=update&target_type=user&target_id={bob}&since=2024-03-03",
     lambda e, p: e.action == "update" and e.target_id == p["bob"] and e.occurred_at >= day(3)),
    ("actor=carol&action=login&action=login_failed&since=2024-03-05&until=2024-03-05",
     lambda e, p: e.actor_id == p["carol"] and e.action in ("login", "login_failed") and day(5) <= e.occurred_at < day(6)),
]


async def test_filters_alone_and_combined_choose_the_events(db, viewer, cast):
    ids = {name: person["id"] for name, person in cast.items()}
    everything = await all_events(db)
    wrong = []
    for query, keep in FILTERS:
        body = await page(viewer, "/audit?" + query.format(**ids))
        expected = newest_first([e for e in everything if keep(e, ids)])
        assert 0 < len(expected) < len(everything), f"{query}: the case should keep some events and drop others"
        if shown(body) != expected or "Filtered" not in body:
            wrong.append((query, shown(body), expected))
    assert not wrong, "\n".join(f"{q}: shown {got}, expected {want}" for q, got, want in wrong)


async def test_an_unknown_actor_matches_nothing(viewer, cast):
    body = await page(viewer, "/audit?actor=nobody.here")
    assert shown(body) == []
    assert "No events match" in body
    body = await page(viewer, "/audit?actor=alic")  # a prefix is not the username
    assert shown(body) == []


GARBAGE = [
    "since=abc", "until=abc", "since=2024-02-30", "until=2024-13-01T00:00", "since=", "until=99999",
    "target_id=x", "target_id=-1", "target_id=1e5", "target_id=99999999999999", "target_type=bogus",
    "target_id=0x10", "target_id=%2B5", "action=bogus", "action=", "action=LOGIN",
    "after=!!!", "before=!!!", "after=%25%25%25", "before=bm90IGpzb24",
    f"after={cursor('not a date', 1)}", f"after={cursor('2024-03-03T00:00:00', 10**20)}",
    f"before={cursor('2024-03-03T00:00:00', -5)}", f"after={cursor([1], 'x')}",
    f"after={cursor('2024-03-03T00:00:00+05:00', 3)}",
    "page=abc", "page=-4", "page=99999999999999999999", "actor=" + "x" * 300, "actor=%F0%9F%98%80",
    "actor=%27%3B+DROP+TABLE+audit_events%3B--",
]


async def test_garbage_in_the_url_never_breaks_the_page(db, viewer, cast):
    unfiltered = newest_first(await all_events(db))
    wrong = []
    for query in GARBAGE:
        response = await viewer.get("/audit?" + query)
        body = await text(response)
        if response.status_code != 200:
            wrong.append(f"/audit?{query}: {response.status_code}")
        elif not query.startswith("actor=") and shown(body) != unfiltered:
            # Nothing usable in it: the unfiltered first page.
            wrong.append(f"/audit?{query}: shown {shown(body)}, not the unfiltered page")
    for query in GARBAGE:  # after the pages: each export adds an event
        response = await viewer.get("/audit.csv?" + query)
        await response.get_data()
        if response.status_code != 200:
            wrong.append(f"/audit.csv?{query}: {response.status_code}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("query", ["since=2024-03-03T12:00Z", "until=2024-03-03T12:00%2B01:00"])
async def test_a_time_with_a_zone_never_breaks_the_page(db, viewer, cast, query):
    response = await viewer.get("/audit?" + query)
    assert response.status_code == 200, (query, response.status_code)


@pytest.mark.parametrize("path", ["/audit", "/audit.csv"])
async def test_a_digit_int_cannot_read_never_breaks_the_page(viewer, cast, path):
    response = await viewer.get(path + "?target_type=user&target_id=%C2%B2")
    assert response.status_code == 200, response.status_code


async def test_a_nul_character_never_breaks_the_page(viewer, cast):
    """PostgreSQL text cannot hold NUL: refused (422), or matching nothing, but never a 500."""
    for url in ("/audit?actor=bob%00", "/audit?actor=%00", "/audit?since=2024-03-01%00", "/audit.csv?actor=bob%00"):
        response = await viewer.get(url)
        assert response.status_code in (200, 422), (url, response.status_code)
        if response.status_code == 200 and url.startswith("/audit?actor"):
            assert shown(await text(response)) == [], url


async def test_a_compact_bare_date_also_means_the_whole_day(db, viewer, cast):
    whole_day = await page(viewer, "/audit?until=2024-03-03")
    assert shown(await page(viewer, "/audit?until=20240303")) == shown(whole_day)


# ---- keyset pages ------------------------------------------------------------------------

LARGE = 3_000


@pytest.fixture
async def large_log(db, make_user):
    """An Admin and 3,000 events over about two days, several sharing a moment, ids not in time order."""
    admin = await make_user("Admin", username="root")
    others = [await make_user("Customer", username=f"person{n}") for n in range(5)]
    rng = random.Random(7)
    rows, moment = [], BASE
    actions = ("login", "logout", "update", "create", "login_failed")
    for n in range(LARGE):
        if n % 4:  # every fourth event happens at the same moment as the one before
            moment += timedelta(seconds=rng.randint(1, 120), microseconds=rng.randint(0, 999_999))
        who = rng.choice(others)
        rows.append(event_row(moment, actor=who, action=actions[n % len(actions)], target_id=who["id"],
                              ip=f"10.0.{n // 250}.{n % 250}"))
    rng.shuffle(rows)
    await insert_events(db, rows)
    return admin


async def walk(client, start: str, kind: str, limit: int = 200) -> tuple[list[list[int]], list[str]]:
    """Pages from `start` following the `kind` links: (ids per page, the URL of each page)."""
    pages, urls, url = [], [], start
    while url:
        body = await page(client, url)
        pages.append(shown(body))
        urls.append(url)
        url = pager_link(body, kind)
        if url:
            params = query_of(url)
            assert ("after" if kind == "next" else "before") in params, url
            assert not {"offset", "skip"} & set(params)
        assert len(pages) <= limit, f"the {kind} links do not end"
    return pages, urls


async def test_next_links_walk_every_event_once_and_prev_links_walk_back(app, db, large_log):
    client = await signed_in_as(app, large_log["id"])
    pages, urls = await walk(client, "/audit", "next")
    walked = [i for p in pages for i in p]
    assert [len(p) for p in pages] == [PAGE_SIZE] * (LARGE // PAGE_SIZE)
    assert len(walked) == len(set(walked)), "an event was shown twice"
    assert walked == newest_first(await all_events(db)), "an event is missing or out of order"

    back, back_urls = await walk(client, urls[-1], "prev")
    assert back[::-1] == pages, "the prev links do not return to the same pages"
    last = await page(client, urls[-1])
    assert pager_link(last, "next") is None and pager_link(last, "first")
    first_again = await page(client, back_urls[-1])
    assert pager_link(first_again, "prev") is None and pager_link(first_again, "first") is None
    assert "page 1<" in first_again and f"page {len(pages)}<" in last


async def test_filtered_pages_walk_the_filtered_events(app, db, large_log):
    client = await signed_in_as(app, large_log["id"])
    pages, _ = await walk(client, "/audit?actor=person2&action=login&action=update", "next")
    walked = [i for p in pages for i in p]
    person2 = (await all_events(db, audit_events.c.actor_name == "person2",
                                audit_events.c.action.in_(("login", "update"))))
    assert len(person2) > PAGE_SIZE * 2
    assert walked == newest_first(person2)
    url = pager_link(await page(client, "/audit?actor=person2&action=login&action=update"), "next")
    assert query_of(url)["actor"] == ["person2"] and query_of(url)["action"] == ["login", "update"]


@pytest.mark.parametrize("filters", ["", "actor=person1&", "action=login&", "target_type=user&target_id={id}&",
                                     "since=2024-03-02&", "actor=person2&action=login&action=update&",
                                     "action=login&action=update&"])
async def test_a_deep_page_is_found_without_offset_and_by_an_index(request, app, db, large_log, filters):
    client = await signed_in_as(app, large_log["id"])
    person1 = (await all_events(db, audit_events.c.actor_name == "person1"))[0].actor_id
    url = "/audit?" + filters.format(id=person1)
    for _ in range(3):  # three pages in
        url = pager_link(await page(client, url), "next")
        assert url
    body, statements = await page_and_statements(app, client, url)
    assert shown(body), "the deep page is empty"
    page_queries = [(s, p) for s, p in statements if "FROM audit_events" in s and "ORDER BY" in s]
    assert len(page_queries) == 1, statements
    assert_no_offset(statements)
    if not app.db.is_sqlite:
        return
    statement, parameters = page_queries[0]
    async with app.db.read() as conn:
        rows = (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)).all()
    plan = [row[-1] for row in rows]
    assert any(re.search(r"\bINDEX ix_audit_events_\w+", step) for step in plan), plan
    if "UNION ALL" in statement:
        # Several actions: each is read from an index in order, at most a page per action, and
        # only those few rows are merged and sorted at the top: never every matching event.
        assert statement.count("LIMIT") == len(re.findall(r"action=", filters)) + 1, statement
        coroutines = {node for node, _, _, step in rows if step.startswith("CO-ROUTINE")}
        assert coroutines, rows
        assert not any(parent in coroutines for _, parent, _, step in rows if "TEMP B-TREE" in step), rows
    else:
        assert not any("TEMP B-TREE" in step for step in plan), plan


# ---- htmx --------------------------------------------------------------------------------

async def test_htmx_aimed_at_the_table_gets_only_the_table(db, viewer, cast):
    body = await page(viewer, "/audit?actor=alice", **htmx("audit-table"))
    assert body.lstrip().startswith('<div id="audit-table"')
    assert "<html" not in body.lower() and "<body" not in body.lower()
    assert 'id="audit-filters"' not in body and 'aria-label="Main"' not in body
    assert shown(body) == newest_first(await all_events(db, audit_events.c.actor_id == cast["alice"]["id"]))


async def test_the_filter_form_gets_the_tidy_url_to_show(viewer, cast):
    response = await viewer.get(
        "/audit?actor=+alice+&action=&target_type=&target_id=&since=2024-03-02T00%3A00&until=",
        headers=htmx("audit-table", **{"HX-Trigger": "audit-filters"}))
    assert response.status_code == 200
    assert response.headers.get("HX-Replace-Url") == "/audit?actor=alice&since=2024-03-02T00%3A00"
    response = await viewer.get("/audit?actor=&action=bogus&target_id=x&target_type=",
                                headers=htmx("audit-table", **{"HX-Trigger": "audit-filters"}))
    assert response.headers.get("HX-Replace-Url") == "/audit"
    response = await viewer.get("/audit?action=login&action=logout&target_type=user&target_id=",
                                headers=htmx("audit-table", **{"HX-Trigger": "audit-filters"}))
    assert response.headers.get("HX-Replace-Url") == "/audit?action=login&action=logout&target_type=user"
    # Other requests leave the address alone.
    response = await viewer.get("/audit?actor=alice&action=", headers=htmx("audit-table"))
    assert "HX-Replace-Url" not in response.headers


# ---- per-user history --------------------------------------------------------------------

async def test_a_users_history_shows_the_events_about_them(db, viewer, cast):
    bob = cast["bob"]
    body = await page(viewer, f"/audit?target_type=user&target_id={bob['id']}")
    about_bob = await all_events(db, audit_events.c.target_type == "user", audit_events.c.target_id == bob["id"])
    assert len(about_bob) >= 4
    assert shown(body) == newest_first(about_bob)
    assert re.search(r"History of <strong>bob</strong>", body)
    link = re.search(r'History of <strong>bob</strong>.*?<a href="([^"]*)"', body, re.S)
    assert link and unescape(link.group(1)) == "/audit?actor=bob"
    by_bob = await page(viewer, unescape(link.group(1)))
    assert shown(by_bob) == newest_first(await all_events(db, audit_events.c.actor_id == bob["id"]))
    assert "History of" not in await page(viewer, "/audit?actor=bob")


async def test_the_users_table_links_each_user_to_their_history(viewer, cast):
    body = await page(viewer, "/users")
    for person in cast.values():
        row = re.search(rf'<tr id="user-{person["id"]}".*?</tr>', body, re.S)
        assert row, person
        assert f'href="/audit?target_type=user&amp;target_id={person["id"]}"' in row.group(0)


# ---- the dashboard -----------------------------------------------------------------------

def stats(html: str) -> dict[str, tuple[int, str]]:
    """The dashboard's counts: {label: (count, link)}."""
    found = re.findall(r'<a href="([^"]*)"><strong>([\d,]+)</strong> ([^<]+)</a>', html)
    return {label: (int(count.replace(",", "")), unescape(url)) for url, count, label in found}


async def test_an_admins_dashboard_counts_the_last_24_hours(app, db, make_user):
    admin, client = await signed_in(app, make_user, "Admin")
    someone = await make_user("Customer")
    now = utcnow()
    inside = lambda minutes: now - timedelta(minutes=minutes)  # noqa: E731
    outside = lambda hours: now - timedelta(hours=hours)  # noqa: E731
    rows = []
    for minutes in (5, 60, 600, 23 * 60):
        rows.append(event_row(inside(minutes), actor=someone, action="login", target_id=someone["id"]))
    for minutes in (30, 120, 1200):
        rows.append(event_row(inside(minutes), action="login_failed", ip="203.0.113.5"))
    for action in ("create", "update", "update", "delete", "restore", "restore"):
        rows.append(event_row(inside(90), actor=admin, action=action, target_id=someone["id"]))
    for action in ("logout", "export", "password_change", "session_end", "register"):
        rows.append(event_row(inside(45), actor=someone, action=action, target_id=someone["id"]))
    for hours in (24.2, 25, 48, 24 * 30):
        for action in ("login", "login_failed", "create", "update", "delete", "restore"):
            rows.append(event_row(outside(hours), actor=someone, action=action, target_id=someone["id"]))
    await insert_events(db, rows)

    response = await client.get("/dashboard")
    body = await text(response)
    assert response.status_code == 200
    assert "Last 24 hours" in body
    found = stats(body)
    assert {label: count for label, (count, _) in found.items()} == {"Logins": 4, "Failed logins": 3, "Changes": 6}
    for label, actions in (("Logins", ["login"]), ("Failed logins", ["login_failed"]),
                           ("Changes", ["create", "update", "delete", "restore"])):
        url = found[label][1]
        assert urlsplit(url).path == "/audit", url
        params = query_of(url)
        assert sorted(params["action"]) == sorted(actions), url
        since = datetime.fromisoformat(params["since"][0])
        assert now - timedelta(hours=24, minutes=2) < since <= now - timedelta(hours=23, minutes=59), url
        # Following the link shows the events counted (the window is as wide as the count's).
        listed = shown(await page(client, url))
        assert len(listed) == found[label][0], (label, url)


@pytest.mark.parametrize("role", ["Manager", "Customer"])
async def test_other_dashboards_show_no_counts(app, db, make_user, role):
    me, client = await signed_in(app, make_user, role)
    await insert_events(db, [event_row(utcnow() - timedelta(minutes=5), actor=me, action="login", target_id=me["id"])])
    body = await page(client, "/dashboard")
    assert "Last 24 hours" not in body and 'id="stats-title"' not in body
    assert stats(body) == {}
    assert 'href="/audit?' not in body


@pytest.mark.parametrize("role", ["Admin", "Manager", "Customer"])
async def test_a_dashboard_lists_ones_own_ten_latest_events(app, db, make_user, role):
    me, client = await signed_in(app, make_user, role)
    other = await make_user("Customer")
    now = utcnow()
    mine = [event_row(now - timedelta(hours=n), actor=me, action=("login", "update", "logout")[n % 3],
                      target_id=me["id"], ip=f"192.0.2.{101 + n}") for n in range(12)]
    random.Random(3).shuffle(mine)
    theirs = [event_row(now - timedelta(minutes=n), actor=other, action="login", target_id=me["id"],
                        ip=f"198.51.100.{101 + n}") for n in range(5)]
    await insert_events(db, mine + theirs)
    body = await page(client, "/dashboard")
    activity = re.search(r'<ol class="activity">(.*?)</ol>', body, re.S)
    assert activity, "no activity list"
    ips = re.findall(r"from (\d+\.\d+\.\d+\.\d+)", activity.group(1))
    assert ips == [f"192.0.2.{101 + n}" for n in range(10)], "not my ten newest, newest first"


# ---- CSV export --------------------------------------------------------------------------

def parse_csv(body: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body, newline="")))


async def csv_export(client, url: str) -> list[list[str]]:
    response = await client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    assert response.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in response.headers.get("Content-Disposition", "")
    return parse_csv(await text(response))


async def test_the_export_has_the_columns_utc_times_and_json_changes(app, db, make_user):
    admin, client = await signed_in(app, make_user, "Admin", username="exporter")
    person = await make_user("Customer", username="pat")
    changes = {"email": ["pat@old.test", "pät@new.test"], "note": [None, 'a "quoted", comma\nline'],
               "active": [True, False], "count": [1, 2.5]}
    rows = [
        event_row(datetime(2024, 3, 1, 9, 30, 15), actor=admin, action="update", target_id=person["id"],
                  target_name="pat", changes=changes, ip="192.0.2.44"),
        event_row(datetime(2024, 3, 2, 23, 59, 59, 999_999), actor=person, action="login",
                  target_id=person["id"], ip="2001:db8::1"),
        event_row(datetime(2024, 3, 3, 0, 0, 1), action="login_failed", ip="203.0.113.1"),
    ]
    await insert_events(db, rows)
    before = await all_events(db)

    table = await csv_export(client, "/audit.csv")
    assert table[0] == CSV_HEADER
    body = table[1:]
    assert all(len(r) == len(CSV_HEADER) for r in body)
    export = body[0]  # the export itself is the newest event
    assert (export[3], export[4], export[5]) == ("exporter", "export", "audit")
    assert [int(r[0]) for r in body[1:]] == newest_first(before)
    by_id = {e.id: e for e in before}
    for r in body:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r[1]), r[1]
    for r in body[1:]:
        e = by_id[int(r[0])]
        assert datetime.fromisoformat(r[1].removesuffix("Z")) == e.occurred_at.replace(microsecond=0)
        assert r[2] == ("" if e.actor_id is None else str(e.actor_id))
        assert r[3:8] == [e.actor_name, e.action, e.target_type, "" if e.target_id is None else str(e.target_id),
                          e.target_name]
        assert r[9] == e.ip
        assert (json.loads(r[8]) if r[8] else None) == e.changes
    assert json.loads(next(r for r in body if r[4] == "update")[8]) == changes
    assert next(r for r in body if r[4] == "update")[7] == "pat"


async def test_the_export_honours_the_filter_and_records_itself(app, db, make_user):
    admin, client = await signed_in(app, make_user, "Admin", username="exporter")
    person = await make_user("Customer", username="pat")
    rows = [event_row(BASE + timedelta(hours=n), actor=person if n % 2 else admin,
                      action=("login", "logout", "update")[n % 3], target_id=person["id"]) for n in range(30)]
    await insert_events(db, rows)
    everything = await all_events(db)

    table = await csv_export(client, "/audit.csv?action=login&since=2024-03-01T05:00")
    expected = newest_first([e for e in everything if e.action == "login" and e.occurred_at >= BASE + timedelta(hours=5)])
    assert [int(r[0]) for r in table[1:]] == expected  # the export event is not a login: not in it

    recorded = await all_events(db, audit_events.c.action == "export")
    assert len(recorded) == 1
    export = recorded[0]
    assert (export.actor_id, export.actor_name, export.target_type) == (admin["id"], "exporter", "audit")
    assert export.changes == {"filter": [None, "/audit?action=login&since=2024-03-01T05%3A00"]}

    table = await csv_export(client, "/audit.csv?actor=exporter")
    mine = newest_first(await all_events(db, audit_events.c.actor_id == admin["id"]))
    assert [int(r[0]) for r in table[1:]] == mine
    assert table[1][4] == "export" and len(mine) == 15 + 2  # half of the rows, and both exports

    body = await page(client, "/audit?actor=exporter&action=update&after=!!!")
    link = re.search(r'<a [^>]*href="(/audit\.csv[^"]*)"', body)
    assert link and unescape(link.group(1)) == "/audit.csv?actor=exporter&action=update"


FORMULAS = {
    "actor_name": ["=cmd|' /C calc'!A0", "+SUM(1+1)*cmd|'/C calc'!A0", "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)",
                   "=HYPERLINK(\"http://x\")"],
    "ip": ["=1+1", "+1", "-1", "@A1"],
    "target_type": ["=user", "+user", "-user", "@user"],
    "target_name": ["=cmd|' /C calc'!A0", "@SUM(1+1)"],
}


async def test_cells_a_spreadsheet_would_run_are_neutralised(app, db, make_user):
    admin, client = await signed_in(app, make_user, "Admin", username="exporter")
    rows = []
    for column, values in FORMULAS.items():
        for value in values:
            row = event_row(BASE, actor=admin, action="update", target_id=1, changes={"note": [None, "+SUM(1)"]})
            row[column] = value
            rows.append(row)
    rows.append(event_row(BASE, actor=admin, action="update", target_id=1, ip="192.0.2.1",
                          actor_name="plain-name=ok", changes={"x": ["-1", "=2"]}))
    await insert_events(db, rows)
    table = await csv_export(client, "/audit.csv?action=update")
    index = {name: n for n, name in enumerate(CSV_HEADER)}
    cells = {column: sorted(r[index[column]] for r in table[1:]) for column in FORMULAS}
    for column, values in FORMULAS.items():
        for value in values:
            assert "'" + value in cells[column], (column, value, cells[column])
            assert value not in cells[column], (column, value)
    plain = next(r for r in table[1:] if r[index["ip"]] == "192.0.2.1")
    assert plain[index["actor_name"]] == "plain-name=ok"
    assert json.loads(plain[index["changes"]]) == {"x": ["-1", "=2"]}
    for r in table[1:]:
        for cell in r:
            assert not cell.startswith(("=", "+", "-", "@")), r


# ---- a big export streams in flat memory -------------------------------------------------

BIG = 100_000  # some 16 MB of CSV
GROWTH_LIMIT = 10 * 2**20  # streaming stays within 1 to 3 MB here; buffering holds at least the CSV


GENERATE = {
    # n = 0 .. count-1: one event every 13 s from 2023-01-01 by one of the accounts actor00-actor04.
    "sqlite": """
        WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < {last})
        INSERT INTO audit_events (occurred_at, actor_id, actor_name, action, target_type, target_id, changes, ip)
        SELECT strftime('%Y-%m-%d %H:%M:%S', 1672531200 + n * 13, 'unixepoch') || '.000000', u.id, u.username,
               CASE n % 6 WHEN 0 THEN 'login' WHEN 1 THEN 'logout' WHEN 2 THEN 'update' WHEN 3 THEN 'create'
                              WHEN 4 THEN 'login_failed' ELSE 'password_change' END,
               'user', u.id,
               json_object('email', json_array(u.username || '.' || n || '@old.example.com',
                                               u.username || '.' || n || '@new.example.com')),
               printf('2001:db8:%x::%x', n % 65536, n % 997)
        FROM seq JOIN users u ON lower(u.username) = printf('actor%02d', n % 5)
    """,
    "postgresql": """
        INSERT INTO audit_events (occurred_at, actor_id, actor_name, action, target_type, target_id, changes, ip)
        SELECT timestamp '2023-01-01' + n * interval '13 seconds', u.id, u.username,
               (ARRAY['login', 'logout', 'update', 'create', 'login_failed', 'password_change'])[n % 6 + 1],
               'user', u.id,
               json_build_object('email', json_build_array(u.username || '.' || n || '@old.example.com',
                                                           u.username || '.' || n || '@new.example.com')),
               '2001:db8:' || to_hex(n % 65536) || '::' || to_hex(n % 997)
        FROM generate_series(0, {last}) AS n JOIN users u ON lower(u.username) = 'actor' || lpad((n % 5)::text, 2, '0')
    """,
}


async def generate_events(db, count: int) -> None:
    """`count` events made by the database itself: a Python round trip per row would take longer
    than the export being measured."""
    async with db.write() as conn:
        await conn.exec_driver_sql(GENERATE[conn.dialect.name].format(last=count - 1))


class MemoryPeak:
    """How far this process's memory rose above where it was, at most, during a block; the app
    runs in this process (the Quart test client), so its allocations count.

    By default the resident set: its high-water mark is reset through /proc/self/clear_refs after
    handing freed heap back to the system (malloc_trim), and VmRSS is also sampled at each chunk.
    This costs nothing. With AUDIT_TEST_TRACEMALLOC=1 the peak of tracemalloc instead: exact for
    Python's heap, but it makes the export about four times slower (some 45 s per database here,
    and past Quart's 60 s response timeout on a loaded machine)."""

    def __init__(self):
        self.tracing = os.environ.get("AUDIT_TEST_TRACEMALLOC") == "1"
        self.highest = self.base = 0

    @staticmethod
    def status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def __enter__(self):
        gc.collect()
        if self.tracing:
            tracemalloc.start()
            return self
        if not Path("/proc/self/clear_refs").exists():
            pytest.skip("the resident-set measure needs Linux's /proc; set AUDIT_TEST_TRACEMALLOC=1")
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        self.base = self.highest = self.status("VmRSS")
        return self

    def sample(self) -> None:
        if not self.tracing:
            self.highest = max(self.highest, self.status("VmRSS"))

    def __exit__(self, *exc):
        if self.tracing:
            self.highest = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        else:
            self.highest = max(self.highest, self.status("VmHWM"))

    @property
    def growth(self) -> int:
        return self.highest - self.base


async def stream_export(client, url: str, memory: MemoryPeak | None = None, wait: float = 30):
    """Reads a streamed answer chunk by chunk, keeping only counts and its first bytes:
    (connection, newline count, byte count, first bytes). A chunk that does not come within
    `wait` seconds fails the test (the stream was cut without its last chunk)."""
    lines = size = 0
    first = b""
    async with client.request(url) as connection:
        await connection.send_complete()
        while True:
            try:
                data = await asyncio.wait_for(connection.receive(), wait)
            except asyncio.TimeoutError:
                pytest.fail(f"the stream stopped without its end after {size:,} bytes, {lines:,} lines")
            if not data:
                break
            if len(first) < 2000:
                first += data[:2000]
            lines += data.count(b"\n")
            size += len(data)
            del data
            if memory:
                memory.sample()
    return connection, lines, size, first


async def test_a_big_export_streams_in_flat_memory(app, db, make_user):
    admin, client = await signed_in(app, make_user, "Admin", username="exporter")
    for n in range(5):
        await make_user("Customer", username=f"actor{n:02d}")
    await generate_events(db, BIG)
    assert await event_count(db) == BIG
    sample = (await all_events(db, audit_events.c.actor_name == "actor03"))[0]
    assert sample.changes["email"][0].startswith("actor03.") and sample.occurred_at.year == 2023

    with MemoryPeak() as memory:
        connection, lines, size, first = await stream_export(client, "/audit.csv", memory)
    assert connection.status_code == 200
    assert connection.headers["Content-Type"].startswith("text/csv")
    head = first.decode().splitlines()
    assert head[0] == ",".join(CSV_HEADER)
    assert head[1].split(",")[3:6] == ["exporter", "export", "audit"]
    # The header, every generated event, and the export's own event: it is written (and
    # committed) before the rows are read, and it is the newest.
    assert lines == 1 + BIG + 1
    assert size > 1.5 * GROWTH_LIMIT, f"the CSV is only {size:,} bytes: not big enough to tell streaming from buffering"
    assert memory.growth < GROWTH_LIMIT, f"memory rose by {memory.growth:,} bytes for a {size:,}-byte CSV"


async def test_an_export_longer_than_the_response_timeout_still_completes(app, db, make_user):
    _, client = await signed_in(app, make_user, "Admin", username="exporter")
    for n in range(5):
        await make_user("Customer", username=f"actor{n:02d}")
    await generate_events(db, 10_000)
    app.config["RESPONSE_TIMEOUT"] = 0.1  # stands for 60 s and an export that takes ten times longer
    connection, lines, _, _ = await stream_export(client, "/audit.csv", wait=2)
    assert connection.status_code == 200
    assert lines == 1 + 10_000 + 1


# ---- pruning -----------------------------------------------------------------------------

async def test_prune_deletes_exactly_the_older_events_and_records_itself(db, database_url):
    now = utcnow()
    old = [event_row(now - timedelta(days=31, minutes=n), action="login", ip="192.0.2.1") for n in range(12_003)]
    old += [event_row(now - timedelta(days=400), action="update", changes={"a": [1, 2]})]
    young = [event_row(now - timedelta(days=d), action="update", ip="192.0.2.2") for d in (29.9, 29, 10, 1, 0.01)]
    await insert_events(db, old + young)
    young_ids = {e.id for e in await all_events(db, audit_events.c.ip == "192.0.2.2")}
    assert len(young_ids) == 5

    result = run_cli("audit-prune", "--older-than", "30d", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "5,000 events removed" in result.stderr and "10,000 events removed" in result.stderr
    assert "Removed 12,004 audit events older than" in result.stderr

    left = await all_events(db)
    prunes = [e for e in left if e.action == "prune"]
    assert {e.id for e in left if e.action != "prune"} == young_ids
    assert len(prunes) == 1
    assert prunes[0].actor_name == "run.py" and prunes[0].target_type == "audit"
    assert prunes[0].changes["removed"] == [None, 12_004]
    cutoff = datetime.fromisoformat(prunes[0].changes["older_than"][1])
    assert now - timedelta(days=30, minutes=5) < cutoff < now - timedelta(days=29, hours=23, minutes=55)


BAD_AGES = ["30", "30m", "0d", "-1d", "1.5d", "thirty", "d", "", "30 d", "12H", "²d"]


def test_prune_refuses_a_bad_age_from_the_command_line(tmp_path):
    result = run_cli("audit-prune", "--older-than", "30m", database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "--older-than" in result.stderr and "365d" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()


def prune_in_process(tmp_path, monkeypatch, older_than: str) -> int:
    """run.py audit-prune in this process, on a SQLite file at tmp_path/x.db; its exit code."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("SECRET_KEY", SECRET)
    with pytest.raises(SystemExit) as exit:
        run_module().main(["audit-prune", "--older-than", older_than])
    return exit.value.code


@pytest.mark.parametrize("value", BAD_AGES)
def test_prune_refuses_a_bad_age(tmp_path, monkeypatch, capsys, value):
    assert prune_in_process(tmp_path, monkeypatch, value) == 2
    assert "--older-than" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("value", ["9999999999d", "1000000d"])
def test_prune_refuses_an_age_too_big_for_a_date(tmp_path, monkeypatch, value):
    assert prune_in_process(tmp_path, monkeypatch, value) == 2


# ---- read-only on the web ----------------------------------------------------------------

def test_no_audit_route_accepts_a_writing_method(app):
    # Reverting an event (POST /audit/<id>/revert) writes to the user, and records a new event.
    audit_rules = [rule for rule in app.url_map.iter_rules()
                   if rule.rule.startswith("/audit") and rule.endpoint != "audit_log.revert"]
    assert {rule.rule for rule in audit_rules} >= {"/audit", "/audit.csv"}
    for rule in audit_rules:
        assert not rule.methods & {"POST", "PUT", "PATCH", "DELETE"}, (rule.rule, rule.methods)


async def test_writing_to_the_log_is_not_allowed(app, db, make_user):
    admin, client = await signed_in(app, make_user, "Admin", username="root")
    await insert_events(db, [event_row(BASE, actor=admin, action="login")])
    csrf = await token(client)
    for path in ("/audit", "/audit.csv", "/audit?actor=root"):
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response = await client.open(path, method=method, headers={"X-CSRF-Token": csrf},
                                         form={"csrf_token": csrf, "id": "1", "action": "delete"})
            assert response.status_code == 405, (method, path, response.status_code)
    assert len(await all_events(db)) == 1


async def test_a_refused_method_names_the_allowed_ones(app, make_user):
    _, client = await signed_in(app, make_user, "Admin")
    csrf = await token(client)
    response = await client.post("/audit", headers={"X-CSRF-Token": csrf}, form={"csrf_token": csrf})
    assert response.status_code == 405
    assert {"GET", "HEAD"} <= {m.strip() for m in response.headers.get("Allow", "").split(",")}


async def test_every_action_has_a_label_in_the_filter(app, make_user):
    from web.audit.queries import ACTIONS
    _, client = await signed_in(app, make_user, "Admin")
    html = await page(client, "/audit")
    for action in ACTIONS:
        option = re.search(rf'<option value="{action}"[^>]*>([^<]*)</option>', html)
        assert option and option.group(1) != action, action
