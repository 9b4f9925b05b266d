"""Live updates, the server side (GET /events, POST /users/<id>/presence): what a stream
carries and to whom, resuming without gap or duplicate, events committed out of id order,
delivery across processes, the caps, stalled clients, ended sessions, presence and shutdown.

Streams are read over real HTTP (httpx) from the app served by Hypercorn in the test's own
event loop, with a short heartbeat; changes are written straight to the database the way
every route writes them (an audit event in the write transaction)."""
import asyncio
import json
import socket
import time
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

import httpx
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from sqlalchemy import delete, select, update
from sqlalchemy.event import listen

from conftest import make_config
from helpers import cookie_value, open_session, send, signed_in_as
from web import create_app
from web.core import audit_trail as audit
from web.core.db import utcnow
from web.core.tables import audit_chain, audit_events, live_presence, sessions, users
from web.live import broker as live_broker
from web.live import stream as live_stream

WAIT = 30  # seconds a message may take on a loaded machine before the test fails (not a sleep)
HEARTBEAT = 0.2


@pytest.fixture
async def served(db, database_url):
    """The app, with a short heartbeat, served by Hypercorn in this event loop: (app, URL)."""
    app = create_app(make_config(database_url, live_heartbeat=HEARTBEAT, live_max_streams=6))
    async with serving(app) as url:
        yield app, url
    await app.db.dispose()


@asynccontextmanager
async def serving(app, graceful_timeout: float = 30):
    """Stopped as Hypercorn's workers are: the shutdown event ends the streams first."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    config = HypercornConfig()
    config.bind = [f"fd://{listener.fileno()}"]
    config.graceful_timeout = graceful_timeout
    config.accesslog = config.errorlog = None
    stop = asyncio.Event()
    live_stream.shut_with(app, stop)
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    url = f"http://localhost:{listener.getsockname()[1]}"
    while not app.live.running:
        await asyncio.sleep(0.01)
    try:
        yield url
    finally:
        stop.set()
        app.stopped_in = time.monotonic()
        await task
        app.stopped_in = time.monotonic() - app.stopped_in
        listener.detach()  # Hypercorn closed the descriptor it was handed


async def http_as(app, url: str, user_id: int) -> tuple[httpx.AsyncClient, str]:
    """An HTTP client signed in as `user_id` (a session of its own) and its session id."""
    client = app.test_client()
    sid = await open_session(app, client, user_id)
    return httpx.AsyncClient(base_url=url, cookies={"gatehouse": cookie_value(client)}, timeout=WAIT), sid


class Reader:
    """The messages of one open stream, parsed as EventSource does."""

    def __init__(self, response):
        self.response = response
        self.lines = response.aiter_lines()

    async def next(self) -> dict:
        message = {}
        async for line in self.lines:
            if line == "":
                if message:
                    return message
                continue
            name, _, value = line.partition(":")
            message[name or "comment"] = value.removeprefix(" ")
        return {"end": True}

    async def next_of(self, kind: str) -> dict:
        """The next message of `kind` (change, presence, reload), skipping heartbeats."""
        async def wanted():
            while "end" not in (message := await self.next()):
                if message.get("event") == kind:
                    return {**json.loads(message["data"]), "id": message.get("id")}
            return message
        return await asyncio.wait_for(wanted(), WAIT)

    async def ends(self) -> bool:
        while "end" not in await asyncio.wait_for(self.next(), WAIT):
            pass
        return True


@asynccontextmanager
async def stream(http: httpx.AsyncClient, headers=None, after=None):
    params = {"after": after} if after is not None else None
    async with http.stream("GET", "/events", headers=headers, params=params) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = Reader(response)
        assert (await reader.next()) == {"retry": "3000"}
        yield reader


def as_actor(person):
    return audit.Actor(person["id"], person["username"]) if person else None


async def change(db, action: str, target_id: int | None, actor=None) -> int:
    """Records an event as a route does; returns its chain position."""
    async with db.write() as conn:
        await audit.record(conn, action, "user", target_id, actor=as_actor(actor))
    async with db.read() as conn:
        return (await conn.execute(select(audit_events.c.chain_position).order_by(
            audit_events.c.chain_position.desc()).limit(1))).scalar()


async def test_a_stream_carries_changes_each_person_may_see_by_their_role_now(served, make_user):
    app, url = served
    admin, manager, customer, other = (await make_user("Admin"), await make_user("Manager"),
                                       await make_user("Customer"), await make_user("Customer"))
    (admin_http, _), (manager_http, _), (customer_http, _) = [
        await http_as(app, url, person["id"]) for person in (admin, manager, customer)]
    async with stream(admin_http) as admins, stream(manager_http) as managers, stream(customer_http) as customers:
        about_other = await change(app.db, "update", other["id"], actor=admin)
        about_customer = await change(app.db, "update", customer["id"], actor=admin)
        seen = await admins.next_of("change")
        assert seen == {"position": about_other, "action": "update", "target_type": "user",
                        "target_id": other["id"], "target_name": other["username"], "actor": admin["username"],
                        "actor_id": admin["id"], "at": seen["at"], "id": str(about_other)}
        assert (await admins.next_of("change"))["position"] == about_customer
        assert [(await managers.next_of("change"))["position"] for _ in "ab"] == [about_other, about_customer]
        # A Customer's stream carries only what was done to their own account.
        assert (await customers.next_of("change"))["position"] == about_customer

        # The Manager is demoted while the stream is open: from then on, only their own account.
        async with app.db.write() as conn:
            await conn.execute(update(users).where(users.c.id == manager["id"]).values(role="Customer"))
            await audit.record(conn, "update", "user", manager["id"], actor=as_actor(admin),
                               changes={"role": ["Manager", "Customer"]})
        assert (await managers.next_of("change"))["target_id"] == manager["id"]
        await change(app.db, "update", other["id"], actor=admin)
        own = await change(app.db, "update", manager["id"], actor=admin)
        assert (await managers.next_of("change"))["position"] == own  # the change to `other` never came
    for http in (admin_http, manager_http, customer_http):
        await http.aclose()


async def test_a_resumed_stream_misses_nothing_and_repeats_nothing(served, make_user, monkeypatch):
    app, url = served
    admin = await make_user("Admin")
    http, _ = await http_as(app, url, admin["id"])
    first = await change(app.db, "update", admin["id"])
    missed = [await change(app.db, "update", admin["id"]) for _ in range(2)]
    async with stream(http, headers={"Last-Event-ID": str(first)}) as events:
        live = await change(app.db, "update", admin["id"])
        received = [(await events.next_of("change"))["position"] for _ in range(3)]
        assert received == [*missed, live]
        last = await change(app.db, "update", admin["id"])
        assert (await events.next_of("change"))["position"] == last
    async with stream(http, after=missed[-1]) as events:  # the page's data-live-after
        assert (await events.next_of("change"))["position"] == live

    # Too far behind (more than BACKLOG events, or events pruned since): reload, from the head.
    monkeypatch.setattr(live_broker, "BACKLOG", 2)
    async with stream(http, headers={"Last-Event-ID": str(first)}) as events:
        assert await events.next_of("reload") == {"position": last, "id": str(last)}
        newest = await change(app.db, "update", admin["id"])
        assert (await events.next_of("change"))["position"] == newest
    await http.aclose()


async def test_the_page_says_where_its_stream_starts(served, make_user):
    app, url = served
    admin = await make_user("Admin")
    position = await change(app.db, "update", admin["id"])
    http, _ = await http_as(app, url, admin["id"])
    deadline = time.monotonic() + WAIT
    while app.live.position != position and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    page = await http.get("/dashboard")
    assert f'<body data-live-after="{position}">' in page.text
    anonymous = await httpx.AsyncClient(base_url=url).get("/login")
    assert "data-live-after" not in anonymous.text
    await http.aclose()


async def test_an_event_committed_after_a_later_one_is_still_delivered_once_in_chain_order(served, make_user):
    app, url = served
    if app.db.is_sqlite:
        pytest.skip("SQLite has one writer at a time: its transactions commit in the order they insert")
    admin = await make_user("Admin")
    http, _ = await http_as(app, url, admin["id"])
    inserted, release = asyncio.Event(), asyncio.Event()

    async def slow_transaction():
        async with app.db.write() as conn:
            await audit.record(conn, "update", "user", admin["id"], changes={"n": [None, "first"]})
            inserted.set()
            await release.wait()  # commits after the second

    async with stream(http) as events:
        slow = asyncio.create_task(slow_transaction())
        await inserted.wait()
        async with app.db.write() as conn:  # a second connection: inserts later, commits first
            await audit.record(conn, "update", "user", admin["id"], changes={"n": [None, "second"]})
        second = await events.next_of("change")
        release.set()
        await slow
        first = await events.next_of("change")
        assert int(first["id"]) == int(second["id"]) + 1  # later in the chain ...
        async with app.db.read() as conn:
            ids = dict((await conn.execute(select(audit_events.c.chain_position, audit_events.c.id))).all())
            # ... with the lower id: "everything after the last id seen" would have skipped it.
            assert ids[first["position"]] < ids[second["position"]]
            after_last_id = (await conn.execute(select(audit_events.c.id)
                                                .where(audit_events.c.id > ids[second["position"]]))).all()
            assert after_last_id == []
        marker = await change(app.db, "update", admin["id"])
        assert (await events.next_of("change"))["position"] == marker  # and nothing twice
    await http.aclose()



async def test_a_round_after_commits_reads_the_database_once(app):
    """The broker runs a round after every commit: in the usual case one read gives the event it
    handed out last (still the same chain) and those after it."""
    async def commit_events(count: int) -> None:
        for n in range(count):
            async with app.db.write() as conn:
                await audit.record(conn, "update", "user", 3000 + n, actor=audit.Actor(7, "alice"))

    broker = app.live
    await commit_events(1)
    await broker.deliver()  # starts at the head
    await commit_events(2)
    statements = []

    def remember(_conn, _cursor, statement, *_):
        statements.append(statement)
    for engine in app.db.sync_engines:
        listen(engine, "before_cursor_execute", remember)
    await broker.deliver()
    assert len(statements) == 1, statements
    assert broker.position == 3

async def test_another_chain_under_the_server_is_followed(served, make_user):
    """A database replaced under the server (restored from a backup, or emptied between tests):
    its events are new all the same, whether its chain has grown as long as the one the broker
    had followed or is shorter than what a stream had already passed on."""
    app, url = served
    admin = await make_user("Admin")
    http, _ = await http_as(app, url, admin["id"])

    async def replace_chain():
        async with app.db.write() as conn:
            await conn.execute(delete(audit_events))
            await conn.execute(delete(audit_chain))

    async with stream(http) as events:
        first = await change(app.db, "update", admin["id"])
        assert (await events.next_of("change"))["position"] == first
    await replace_chain()
    async with stream(http) as events:
        again = await change(app.db, "update", admin["id"])
        assert again == first  # grown as long: only its hash tells it apart
        assert (await events.next_of("change"))["position"] == again
        second = await change(app.db, "update", admin["id"])
        assert (await events.next_of("change"))["position"] == second
        await replace_chain()
        shorter = await change(app.db, "update", admin["id"])
        # This stream had passed on a higher position: it is told to reload from the new head
        # (the empty chain's, if the broker looked in between), and the events after it, at
        # positions it had passed before, still reach it.
        assert (await events.next_of("reload"))["position"] in (0, shorter)
        passed_before = await change(app.db, "update", admin["id"])
        assert passed_before == second
        while (received := (await events.next_of("change"))["position"]) != passed_before:
            assert received == shorter
    await http.aclose()


async def test_a_change_committed_by_another_process_reaches_streams_on_each_worker(workers_server, app, make_user):
    if app.db.is_sqlite:  # (its one-worker server is the session's, shared with other modules)
        pytest.skip("SQLite runs one worker")
    admins = [await make_user("Admin") for _ in range(4)]
    clients = [(await http_as(app, workers_server, admin["id"]))[0] for admin in admins]
    async with stream(clients[0]) as a, stream(clients[1]) as b, stream(clients[2]) as c, stream(clients[3]) as d:
        # Written by this test's process: neither worker commits it, so only NOTIFY tells them.
        position = await change(app.db, "update", admins[0]["id"])
        for events in (a, b, c, d):  # four streams: both workers are all but certain to hold some
            assert (await events.next_of("change"))["position"] == position
        assert (await clients[0].get("/healthz")).status_code == 200
    for http in clients:
        await http.aclose()


async def test_streams_past_the_caps_are_refused_with_a_reason(served, make_user):
    app, url = served
    one, two = await make_user("Admin"), await make_user("Customer")
    http, _ = await http_as(app, url, one["id"])
    others, _ = await http_as(app, url, two["id"])
    async with stream(http), stream(http), stream(http):
        refused = await http.get("/events")
        assert refused.status_code == 429 and "3 live update streams" in refused.text
        async with stream(others), stream(others), stream(others):  # six in all: the server's cap here
            assert len(app.live.streams) == 6, [(s.user_id, s.closed) for s in app.live.streams]
            full = await (await http_as(app, url, (await make_user("Manager"))["id"]))[0].get("/events")
            assert full.status_code == 503 and "as many live updates" in full.text
            assert (await http.get("/healthz")).status_code == 200
    await http.aclose()
    await others.aclose()


async def test_a_client_that_stops_reading_is_dropped_not_buffered(served, make_user):
    app, _ = served
    admin = await make_user("Admin")
    async with app.app_context():
        from web.accounts.sessions import CurrentUser
        holder = CurrentUser(admin["id"], admin["username"], "", "Admin", "sid", False, True)
        stalled = app.live.open(holder)
        for n in range(live_broker.QUEUE + 1):
            app.live.presence({"row": n, "editor": "x", "editor_id": 1, "editing": True})
    assert stalled.closed and stalled not in app.live.streams
    assert stalled.queue.qsize() == 1  # only the end is left: nothing buffered without bound


async def test_an_ended_session_closes_its_stream(served, make_user):
    app, url = served
    alice, bob = await make_user("Customer"), await make_user("Manager")
    alices, alice_sid = await http_as(app, url, alice["id"])
    bobs, _ = await http_as(app, url, bob["id"])
    async with stream(alices) as alice_events, stream(bobs) as bob_events:
        # Ended without any event (e.g. an expiry): the next heartbeat finds it gone.
        async with app.db.write() as conn:
            await conn.execute(delete(sessions).where(sessions.c.id == alice_sid))
        assert await alice_events.ends()
        # Deactivated: the deactivation's own event closes the stream before delivering anything.
        async with app.db.write() as conn:
            await conn.execute(update(users).where(users.c.id == bob["id"]).values(active=False))
            await audit.record(conn, "update", "user", bob["id"], changes={"active": [True, False]})
        assert (await bob_events.next_of("change")) == {"end": True}
    assert app.live.streams == set()
    await alices.aclose()
    await bobs.aclose()


async def test_presence_is_announced_to_staff_and_expires(served, make_user):
    app, url = served
    ada, customer = await make_user("Admin", username="ada"), await make_user("Customer")
    watcher, _ = await http_as(app, url, (await make_user("Manager"))["id"])
    customers, _ = await http_as(app, url, customer["id"])
    editor = await signed_in_as(app, ada["id"])
    async with stream(watcher) as events, stream(customers) as customer_events:
        assert (await send(editor, f"/users/{customer['id']}/presence", {"editing": "1"})).status_code == 204
        assert await events.next_of("presence") == {"row": customer["id"], "editor": "ada", "editor_id": ada["id"],
                                                    "editing": True, "id": None}
        # The editor went away without a word: once its time is past, the sweep announces it.
        async with app.db.write() as conn:
            await conn.execute(update(live_presence).values(expires_at=utcnow() - timedelta(seconds=1)))
        await app.live.sweep()
        assert (await events.next_of("presence"))["editing"] is False
        async with app.db.read() as conn:
            assert (await conn.execute(select(live_presence))).all() == []
        # Said so: gone at once.
        await send(editor, f"/users/{customer['id']}/presence", {"editing": "1"})
        await send(editor, f"/users/{customer['id']}/presence", {"editing": "0"})
        assert (await events.next_of("presence"))["editing"] is True
        assert (await events.next_of("presence"))["editing"] is False
        # Customers hear nothing of it: the next thing on their stream is a change to them.
        marker = await change(app.db, "update", customer["id"])
        while "event" not in (message := await asyncio.wait_for(customer_events.next(), WAIT)):
            pass
        assert message["event"] == "change" and message["id"] == str(marker)
    bad = await send(editor, f"/users/{customer['id']}/presence", {"editing": "maybe"})
    assert bad.status_code == 400
    assert (await send(editor, "/users/999999/presence", {"editing": "1"})).status_code == 404
    refused = await send(await signed_in_as(app, customer["id"]), f"/users/{customer['id']}/presence", {"editing": "1"})
    assert refused.status_code == 403
    await watcher.aclose()
    await customers.aclose()


async def test_stopping_the_server_ends_open_streams_at_once(db, database_url, make_user):
    """Hypercorn waits for open answers (up to its graceful timeout) before it stops: a stream,
    which never ends by itself, is ended as soon as the shutdown starts, and ends cleanly."""
    app = create_app(make_config(database_url))
    admin = await make_user("Admin")
    async with serving(app, graceful_timeout=60) as url:
        http, _ = await http_as(app, url, admin["id"])
        opened = stream(http)
        events = await opened.__aenter__()
        ended = asyncio.create_task(events.ends())  # a cut connection would raise instead
    assert await ended
    assert app.stopped_in < 30, "the server waited for the stream instead of ending it"
    await opened.__aexit__(None, None, None)
    await http.aclose()
    await app.db.dispose()


async def test_the_server_answers_beside_twenty_open_streams(db, database_url, make_user):
    """Streams hold no database connection, and the process listens once for all of them."""
    app = create_app(make_config(database_url))
    people = []
    async with serving(app) as url, AsyncExitStack() as streams:
        people = [(await http_as(app, url, (await make_user("Customer"))["id"]))[0] for _ in range(7)]
        for http in (people * 3)[:20]:
            await streams.enter_async_context(stream(http))
        assert len(app.live.streams) == 20
        assert (await people[0].get("/healthz")).status_code == 200
    for http in people:
        await http.aclose()
    await app.db.dispose()
