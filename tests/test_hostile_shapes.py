"""Hostile shapes: values at the edges of what each kind of field can hold, on every form field
and query parameter of the public and staff routes, as the roles that reach their work, on both
databases. Dates at the extremes (years 1 and 9999, with times and zones, compact forms),
parameters repeated 1,200 times, identifiers, usernames, emails and search terms hundreds to
tens of thousands of characters long, keyset cursors holding such dates and ids.

Never a 5xx, and a CSV export that answers 200 is whole. Beside them, the bugs these shapes
found, pinned down; and the export's hold on the server: downloads that read nothing neither
keep a pooled connection nor stay forever.
"""
import asyncio
import csv
import fcntl
import io
import re
import socket
import struct
import termios
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

from conftest import PASSWORD
from helpers import AUTH_COOKIE, cookie_value, open_session, token
from test_audit_log import generate_events
from test_hostile_input import World, readable, world  # noqa: F401 (a fixture)
from web.accounts import throttle
from web.audit import routes as audit_routes
from web.audit.queries import ACTIONS, AuditFilter
from web.core import keyset
from web.core.tables import audit_events, login_throttle, users

pytestmark = pytest.mark.reliability

EXAMPLES = 40
CSV_HEADER = ",".join(audit_routes.CSV_COLUMNS)


# ---- shapes ------------------------------------------------------------------------------

def iso_date(year: int, month_day: tuple[int, int], time: str, zone: str, compact: bool) -> str:
    month, day = month_day
    text = f"{year:04d}-{month:02d}-{day:02d}" + (time + zone if time else "")
    return text.replace("-", "", 2).replace(":", "") if compact else text


# The first and last days a date holds, with times and zones that move them past either end,
# in the extended and the compact ISO forms: few enough values that the examples see most.
extreme_dates = st.builds(
    iso_date,
    st.sampled_from([1, 9999]),
    st.sampled_from([(1, 1), (12, 31)]),
    st.sampled_from(["", "T00:00", "T23:59", "T12:00:00.5"]),
    st.sampled_from(["", "Z", "+14:00", "-12:00"]),
    st.booleans(),
)
long_chars = st.sampled_from(["a", "Z", "9", " ", "é", "ß", "İ", "😀", "\u202e", "%", "&", "="])
lengths = st.sampled_from([33, 255, 296, 301, 1_000, 20_000])
long_text = st.builds(lambda c, n: c * n, long_chars, lengths)
long_emails = st.one_of(st.builds(lambda n: "a" * n + "@example.com", lengths),
                        st.builds(lambda n: "a@" + "b" * n + ".example.com", lengths))
ids = st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -1])
cursors = st.builds(keyset.encode_cursor, st.one_of(extreme_dates, long_text, st.just(True)), ids)
back_urls = st.builds(lambda params: "/users?" + urlencode(params),
                      st.lists(st.tuples(st.sampled_from(["q", "sort", "after", "before", "page"]),
                                         st.one_of(long_text, cursors, st.just("created"))), max_size=4))
short = st.sampled_from(["", "1", "on", "login", "update", "user", "Admin", "created", "desc", "activate"])
any_shape = st.one_of(extreme_dates, long_text, long_emails, cursors, back_urls,
                      ids.map(str), st.builds(lambda n: "9" * n, lengths))
# The shape each kind of field is most often given (it gets any other shape too).
OWN_SHAPE = {"since": extreme_dates, "until": extreme_dates, "after": cursors, "before": cursors,
             "back": back_urls, "email": long_emails, "action": short}


@st.composite
def hostile_values(draw, name: str) -> list[str]:
    """The values sent for a field: one, or a short one repeated 1,200 times."""
    shape = draw(st.one_of(OWN_SHAPE.get(name, long_text), any_shape, short))
    times = draw(st.sampled_from([1, 1, 1, 2, 1_200])) if len(shape) <= 20 else 1
    return [shape] * times


STAFF = ("Admin", "Manager")
SIGNED_IN = ("Customer", *STAFF)
TABLE = ("q", "role", "active", "sort", "dir", "after", "before", "page")
AUDIT = ("actor", "action", "target_type", "target_id", "since", "until", "after", "before", "page")
NEW_PASSWORD = "a fresh long passphrase of mine"
NEWCOMER = {"username": "newcomer", "email": "newcomer@example.com", "password": NEW_PASSWORD,
            "password_confirm": NEW_PASSWORD}


@dataclass(frozen=True)
class Route:
    """A route, the roles that reach its work, and a plausible request (the query and the form)
    that the shapes replace one or two fields of."""
    method: str
    path: str
    roles: tuple
    query: dict
    form: dict = field(default_factory=dict)
    query_fields: tuple = ()

    @property
    def fields(self) -> list[str]:
        return sorted({*self.query, *self.query_fields, *self.form})


TABLE_QUERY = {"sort": "created", "dir": "desc"}
ROUTES = {
    "login_form": Route("GET", "/login", ("anonymous",), {"next": "/users"}),
    "audit": Route("GET", "/audit", STAFF, {"action": "update", "target_type": "user"}, query_fields=AUDIT),
    "audit_csv": Route("GET", "/audit.csv", STAFF, {"action": "update", "target_type": "user"}, query_fields=AUDIT),
    "users": Route("GET", "/users", STAFF, TABLE_QUERY, query_fields=TABLE),
    "users_new": Route("GET", "/users/new", STAFF, TABLE_QUERY, query_fields=TABLE),
    "users_show": Route("GET", "/users/{other}/row", STAFF, TABLE_QUERY, query_fields=TABLE),
    "users_edit": Route("GET", "/users/{other}/edit", STAFF, TABLE_QUERY, query_fields=TABLE),
    "users_confirm_delete": Route("GET", "/users/{other}/delete", STAFF, TABLE_QUERY, query_fields=TABLE),
    "login": Route("POST", "/login", ("anonymous",), {}, {"identifier": "customer2", "password": "not the one",
                                                          "remember": "on", "next": "/users"}),
    "register": Route("POST", "/register", ("anonymous",), {}, NEWCOMER),
    "register_check": Route("POST", "/register/check", ("anonymous",), {}, NEWCOMER),
    "profile_email": Route("POST", "/profile/email", SIGNED_IN, {},
                           {"email": "renamed@example.com", "current_password": PASSWORD}),
    "profile_password": Route("POST", "/profile/password", SIGNED_IN, {}, {
        "current_password": PASSWORD, "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}),
    "users_create": Route("POST", "/users", STAFF, {}, {
        "username": "made1", "email": "made1@example.com", "role": "Customer", "back": "/users?sort=created"}, query_fields=TABLE),
    "users_save": Route("POST", "/users/{other}", STAFF, {}, {
        "username": "customer2", "email": "customer2@example.com", "role": "Customer", "active": "1",
        "version": "{version}", "back": "/users?sort=created&dir=desc"}, query_fields=TABLE),
    "users_delete": Route("POST", "/users/{other}/delete", STAFF, {}, {"back": "/users?q=cu"}, query_fields=TABLE),
    "users_restore": Route("POST", "/users/{deleted}/restore", STAFF, {}, {"back": "/users"}, query_fields=TABLE),
    "users_bulk": Route("POST", "/users/bulk", STAFF, {}, {"action": "deactivate", "ids": "{other}", "back": "/users"},
                        query_fields=TABLE),
}


def whole_csv(body: str) -> bool:
    """An export that ran to its end: the header, then complete lines only."""
    return body.startswith(CSV_HEADER + "\r\n") and body.endswith("\n") and \
        all(len(row) == len(audit_routes.CSV_COLUMNS) for row in csv.reader(io.StringIO(body, newline="")))


async def client_for(world: World, role: str):
    """(client, CSRF token): a fresh visitor for the public forms (a login would sign the
    shared one in), else the role's signed-in client."""
    if role == "anonymous":
        client = world.app.test_client()
        return client, await token(client)
    return world.clients[role], world.tokens[role]


async def placeholders(world: World) -> dict[str, str]:
    async with world.db.read() as conn:
        version = (await conn.execute(sa.select(users.c.version).where(users.c.id == world.ids["other"]))).scalar_one()
    return {"other": str(world.ids["other"]), "deleted": str(world.ids["deleted"]), "version": str(version)}


def request_pairs(plausible: dict, fields: list[str], hostile: dict[str, list[str]], known: dict) -> list:
    """The plausible values with the hostile ones in their place, as (name, value) pairs."""
    pairs = []
    for name in fields:
        if name in hostile:
            pairs.extend((name, v) for v in hostile[name])
        elif name in plausible:
            pairs.append((name, plausible[name].format(**known)))
    return pairs


def shapes_test(name: str):
    route = ROUTES[name]

    @st.composite
    def hostile_fields(draw) -> dict[str, list[str]]:
        chosen = draw(st.lists(st.sampled_from(route.fields), min_size=1, max_size=2, unique=True))
        return {f: draw(hostile_values(f)) for f in chosen}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(role=st.sampled_from(route.roles), hostile=hostile_fields(), htmx=st.booleans())
    async def test(world, role, hostile, htmx):
        await world.reset()
        client, csrf = await client_for(world, role)
        known = await placeholders(world)
        url = route.path.format(**known)
        query = request_pairs(route.query, sorted({*route.query, *route.query_fields}), hostile, known)
        if query:
            url += "?" + urlencode(query)
        headers = {"X-CSRF-Token": csrf, **({"HX-Request": "true"} if htmx else {})}
        if route.method == "GET":
            response = await client.get(url, headers=headers)
        else:
            form = request_pairs(route.form, sorted(route.form), hostile, known)
            response = await client.post(url, data=urlencode(form).encode(), headers={
                **headers, "Content-Type": "application/x-www-form-urlencoded"})
        body = await response.get_data(as_text=True)
        shown = f"{route.method} {route.path} as {role}: {[(k, len(v), v[0][:80]) for k, v in hostile.items()]}"
        assert response.status_code < 500, f"{shown}: {response.status_code}\n{body[:2000]}"
        if response.status_code >= 400:
            assert readable(response, body), f"{shown}: {response.status_code} says nothing: {body[:500]!r}"
        if name == "audit_csv" and response.status_code == 200:
            assert whole_csv(body), f"{shown}: the export stopped part-way: {body[-300:]!r}"
    return test


for _route in ROUTES:
    globals()[f"test_hostile_shapes_{_route}"] = shapes_test(_route)


DATE_FIELDS = [("/audit", f) for f in ("since", "until", "after", "before")] + \
    [("/audit.csv", f) for f in ("since", "until")] + \
    [(f"/users?sort={sort}", f) for sort in ("created", "last_login") for f in ("after", "before")]


@pytest.mark.parametrize("where", DATE_FIELDS, ids="{0[0]} {0[1]}".format)
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(moment=extreme_dates, row_id=ids, role=st.sampled_from(STAFF))
async def test_hostile_shapes_dates_at_the_extremes(world, where, moment, row_id, role):
    """Every field that holds a moment, given the first and last days a date holds, with times
    and zones that move them past either end; the cursors carry them too."""
    path, name = where
    given_value = keyset.encode_cursor(moment, row_id) if name in ("after", "before") else moment
    url = path + ("&" if "?" in path else "?") + urlencode({name: given_value})
    response = await world.clients[role].get(url)
    body = await response.get_data(as_text=True)
    assert response.status_code == 200, f"{url} ({name}={moment}): {response.status_code}\n{body[:1000]}"
    if path == "/audit.csv":
        assert whole_csv(body), f"{url}: the export stopped part-way: {body[-300:]!r}"


# ---- the bugs these shapes found, pinned down --------------------------------------------

EVENT_ACTIONS = ("login", "update", "logout", "create", "delete")


def event(occurred_at: datetime, n: int = 0) -> dict:
    return {"occurred_at": occurred_at, "actor_id": None, "actor_name": f"actor{n % 7}", "action": EVENT_ACTIONS[n % 5],
            "target_type": "user", "target_id": n, "ip": "2001:db8::1",
            "changes": {"email": [f"before.{n}@old.example.com", f"after.{n}@new.example.com"]}}


async def add_events(db, rows: list[dict]) -> None:
    async with db.write() as conn:
        await conn.execute(sa.insert(audit_events), rows)


@pytest.mark.parametrize("query", [
    "until=9999-12-31", "until=99991231", "since=0001-01-01&until=9999-12-31",
    "until=9999-12-31T23:59-01", "since=0001-01-01T00:00%2B01",  # zones that move the moment past year 9999 or 1
])
async def test_the_first_and_last_days_a_date_holds_filter_like_any_other(world, query):
    """`until=9999-12-31` means up to the end of that day (a 500: a day added overflowed); a
    zone that moves a moment past the years a date holds is no date (OverflowError)."""
    await add_events(world.db, [event(datetime(1, 1, 1), 1), event(datetime(9999, 12, 31, 23, 59, 59, 999999), 2)])
    client = world.clients["Admin"]
    response = await client.get("/audit?" + query)
    assert response.status_code == 200, await response.get_data(as_text=True)
    body = await response.get_data(as_text=True)
    assert 'id="event-' in body
    response = await client.get("/audit.csv?" + query)
    body = await response.get_data(as_text=True)
    assert response.status_code == 200 and whole_csv(body), body[-500:]
    assert len(body.splitlines()) >= 3, "the events of years 1 and 9999 are in the export"


async def test_a_compact_time_is_a_moment_not_the_whole_day(world):
    """Without a colon, `until=20240303T1200` was taken for a bare date: the whole of that day."""
    await add_events(world.db, [event(datetime(2024, 3, 3, 10), 1), event(datetime(2024, 3, 3, 14), 2)])
    client = world.clients["Admin"]
    async with world.db.read() as conn:
        morning = (await conn.execute(sa.select(audit_events.c.id).where(audit_events.c.target_id == 1))).scalar_one()
    for query in ("until=20240303T1200", "until=2024-03-03T12:00"):
        body = await (await client.get("/audit?" + query)).get_data(as_text=True)
        assert re.findall(r'<tr id="event-(\d+)"', body) == [str(morning)], query


async def test_an_action_repeated_1200_times_is_one_filter(world):
    """Each repeat was one more SELECT merged into the page: a 500 on SQLite (too many terms in
    a compound SELECT), seconds a request on PostgreSQL."""
    await add_events(world.db, [event(datetime(2024, 3, 1) + timedelta(minutes=n), n) for n in range(20)])
    query = "&".join(["action=login", "action=update"] * 600)
    view = AuditFilter.from_args(MultiDict(parse_qsl(query)))
    assert view.action == ("login", "update")
    client = world.clients["Manager"]
    response = await client.get("/audit?" + query)
    body = await response.get_data(as_text=True)
    assert response.status_code == 200, body[:1000]
    assert re.search(r'<a [^>]*href="/audit\.csv\?action=login&amp;action=update"', body)
    response = await client.get("/audit.csv?" + query)
    body = await response.get_data(as_text=True)
    assert response.status_code == 200 and whole_csv(body)
    assert {row[4] for row in csv.reader(io.StringIO(body, newline=""))} == {"action", "login", "update"}


def test_every_action_kept_once_bounds_the_filter():
    view = AuditFilter.from_args(MultiDict([("action", a) for a in ACTIONS * 100] + [("action", "bogus")]))
    assert view.action == ACTIONS


@pytest.mark.parametrize("length", [1, 95, 96, 296, 300, 1_000, 60_000])
def test_a_login_name_key_fits_the_column_at_any_length(length):
    key = throttle.name_key("Ab" * (length // 2) + "c" * (length % 2))
    assert len(key) <= login_throttle.c.key.type.length
    assert key == throttle.name_key(("Ab" * (length // 2) + "c" * (length % 2)).upper())


async def test_a_long_unknown_login_name_is_counted_and_audited(world):
    """PostgreSQL: a name of 296+ characters made the key overflow varchar(300): a 500, and the
    failure was neither counted nor audited."""
    for length in (296, 300, 1_000, 60_000):
        await world.reset()
        client, csrf = await client_for(world, "anonymous")
        response = await client.post("/login", form={"identifier": "n" * length, "password": "not it at all",
                                                     "csrf_token": csrf})
        assert response.status_code == 401, (length, response.status_code)
        async with world.db.read() as conn:
            keys = (await conn.execute(sa.select(login_throttle.c.key))).scalars().all()
            failed = (await conn.execute(sa.select(audit_events.c.id).where(
                audit_events.c.action == "login_failed"))).all()
        assert throttle.name_key("n" * length) in keys, (length, keys)
        assert failed, length
        async with world.db.write() as conn:
            await conn.execute(sa.delete(audit_events))


# ---- downloads that read nothing ---------------------------------------------------------

STALLED = 16  # more downloads than either pool holds: SQLite 5, PostgreSQL 5 + 10 overflow
EXPORT_EVENTS = 50_000  # some 10 MB of CSV: more than the socket buffers between client and server hold


def unread_bytes(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0\0\0\0"))[0]


def stalled_download(base_url: str, cookie: str) -> socket.socket:
    """Asks for the export and never reads: a small receive buffer fills at once."""
    address = urlsplit(base_url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((address.hostname, address.port))
    sock.sendall(f"GET /audit.csv HTTP/1.1\r\nHost: {address.netloc}\r\nCookie: {cookie}\r\n\r\n".encode())
    return sock


async def until_each_has_received(socks: list[socket.socket], size: int, within: float = 20) -> None:
    """Waits until every download has `size` bytes waiting unread: each export is past its
    first batch, then stuck with full buffers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (received := [unread_bytes(s) for s in socks]) and min(received) < size:
        assert loop.time() < deadline, f"bytes received by each download: {received}"
        await asyncio.sleep(0.05)


async def signed_in_cookie(app, make_user, role="Admin") -> str:
    account = await make_user(role)
    client = app.test_client()
    await open_session(app, client, account["id"])
    return f"{AUTH_COOKIE}={cookie_value(client)}"


async def test_downloads_that_read_nothing_leave_the_server_answering(live_server, app, db, make_user):
    """Each export held a pooled connection from its first row to its last: five stalled
    downloads took SQLite's whole pool, and /healthz waited 30 s for one, then answered 503."""
    cookie = await signed_in_cookie(app, make_user)
    for n in range(5):
        await make_user("Customer", username=f"actor{n:02d}")
    await generate_events(db, EXPORT_EVENTS)
    downloads = [stalled_download(live_server, cookie) for _ in range(STALLED)]
    try:
        await until_each_has_received(downloads, 2_000)
        # A pool timeout (30 s) would hit this client's timeout first.
        async with httpx.AsyncClient(base_url=live_server, timeout=10, headers={"Cookie": cookie}) as http:
            health, page = await asyncio.gather(http.get("/healthz"), http.get("/audit?action=update"))
        assert health.status_code == 200, health.text
        assert page.status_code == 200 and 'id="event-' in page.text
    finally:
        for sock in downloads:
            sock.close()


def asgi_request(path: str, cookie: str) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"localhost"), (b"cookie", cookie.encode())],
            "client": ("127.0.0.1", 50000), "server": ("localhost", 80), "extensions": {}}


async def test_a_download_that_stops_reading_is_dropped(app, db, make_user, monkeypatch):
    """Hypercorn has no send timeout: the app's send to a client that stopped reading never
    returned, and the export kept its task, its rows and its connection for ever. Here the
    ASGI server is a function whose send blocks after the first batch, as a full socket does."""
    monkeypatch.setattr(audit_routes, "STALLED_SECONDS", 0.2)
    cookie = await signed_in_cookie(app, make_user)
    await add_events(db, [event(datetime(2024, 1, 1) + timedelta(seconds=n), n) for n in range(3 * audit_routes.BATCH)])
    sent, connections_held = [], []
    never = asyncio.Event()
    request = iter([{"type": "http.request", "body": b"", "more_body": False}])

    async def receive():
        if message := next(request, None):
            return message
        await never.wait()  # the client neither reads nor goes away

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and len(sent) == 3:  # start, the CSV header, a batch
            connections_held.append(app.db.engine.pool.checkedout())
            await never.wait()

    await asyncio.wait_for(app(asgi_request("/audit.csv", cookie), receive, send), 10)
    assert sent[0]["status"] == 200
    assert connections_held == [0], "the export held a pooled connection while the client did not read"
    assert sent[-1].get("more_body", True), "a dropped export does not pretend to have ended"
