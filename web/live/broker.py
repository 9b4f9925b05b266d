"""One broker per worker process: it learns that events were committed, reads them from the
database once, and hands each open stream what its holder may see.

What wakes it: on PostgreSQL one dedicated connection LISTENing for the NOTIFY that every
sealing transaction sends (delivered at commit, to every process on every host); in this
process, the commit itself (audit_trail.SEALED). A look every POLL_SECONDS covers a listening
connection that was lost. Events are read by chain position, which is given at commit and in
commit order, so nothing committed late is skipped and nothing is read twice.

Every round that delivers events, and every heartbeat, first reads the sessions behind the
open streams in one query: a stream whose session has ended (logout, ended by an Admin,
deactivation, password change, expiry) is closed, and each event is filtered by its holder's
role as it is now, not as it was when the stream opened.
"""
import asyncio
import json
import logging
from functools import partial
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from ..core.audit_trail import SEALED, SEALED_CHANNEL
from ..core.db import after_commit, utcnow
from . import queries

logger = logging.getLogger(__name__)

# One stream per browser (static/live.js shares it between tabs through a SharedWorker), so
# three covers a person's laptop, phone and a second browser; more is a leak or a script.
PER_USER = 3
# Messages waiting for a stream's client before that client counts as stalled and is dropped
# (it reconnects, and resumes from its Last-Event-ID or is told to reload).
QUEUE = 256
# How far behind a resuming client may be: further, and it reloads its view instead.
BACKLOG = 1000
BATCH = 500
POLL_SECONDS = 5.0
PRESENCE_CHANNEL = "gatehouse_presence"
STAFF = frozenset({"Admin", "Manager"})
CLOSE = object()
PING = (None, ": ping\n\n")


class Refused(Exception):
    """No stream for this request: (HTTP status, what to tell the person)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def visible(event, user_id: int, role: str) -> bool:
    """Whether the holder of a stream may see `event` now: staff see the whole audit log; a
    Customer only what was done to their own account."""
    return role in STAFF or (event.target_type == "user" and event.target_id == user_id)


def change(event) -> tuple[int, str]:
    data = {"position": event.chain_position, "action": event.action, "target_type": event.target_type,
            "target_id": event.target_id, "target_name": event.target_name, "actor": event.actor_name,
            "actor_id": event.actor_id, "at": event.occurred_at.isoformat(timespec="seconds") + "Z"}
    return event.chain_position, f"id: {event.chain_position}\nevent: change\ndata: {json.dumps(data)}\n\n"


def reload(position: int) -> tuple[int, str]:
    # With an id, so that the browser's next reconnection starts from here, not behind again.
    return position, f"id: {position}\nevent: reload\ndata: {json.dumps({'position': position})}\n\n"


class Rewind(NamedTuple):
    """For a stream that has passed on more than the chain now holds (a database restored under
    the server): it sends a reload, and what comes after `position` is new again."""
    position: int


class Stream:
    """One open GET /events: its holder, a bounded queue of (position or None, text), and the
    last chain position it has passed on."""

    def __init__(self, user):
        self.user_id, self.session_id, self.role = user.id, user.session_id, user.role
        self.queue: asyncio.Queue = asyncio.Queue(QUEUE)
        self.last = 0
        self.task: asyncio.Task | None = None  # the task writing the answer to the client
        self.waiting = False  # for the next message (not stuck writing the last one)
        self.closed = False

    def put(self, message) -> bool:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            return False
        return True

    def end(self) -> None:
        """Ends the answer: at its next message, or at once when its write is stuck on a client
        that does not read (cancelled, as the audit export drops a stalled reader)."""
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(CLOSE)
        if self.task is not None and not self.waiting:
            self.task.cancel()

    async def messages(self):
        self.task = asyncio.current_task()
        while True:
            self.waiting = True
            try:
                message = await self.queue.get()
            finally:
                self.waiting = False
            if message is CLOSE:
                return
            if isinstance(message, Rewind):
                self.last, text = reload(message.position)
                yield text
                continue
            position, text = message
            if position is not None:
                if position <= self.last:
                    continue  # already sent from the backlog
                self.last = position
            yield text


class Broker:
    def __init__(self, db, config):
        self.db, self.config = db, config
        self.streams: set[Stream] = set()
        self.position: int | None = None  # the last event handed to the streams
        self.mark: str | None = None  # its chain hash: another hash there means another chain
        self.wake = asyncio.Event()
        self.listener = None  # PostgreSQL: the connection LISTENing
        self.stopping = False
        self.running = False  # its task is (the server is serving)

    # ---- streams ---------------------------------------------------------------------------

    def open(self, user) -> Stream:
        """A new stream for `user` (CurrentUser), or Refused past the caps."""
        if self.stopping or not self.running:
            raise Refused(503, "The server is starting or stopping; live updates resume in a moment.")
        if len(self.streams) >= self.config.live_max_streams:
            raise Refused(503, "The server has as many live updates open as it can take; "
                               "pages still work, and show changes when reloaded.")
        if sum(s.user_id == user.id for s in self.streams) >= PER_USER:
            raise Refused(429, f"You already have {PER_USER} live update streams open (one per browser); "
                               "close a browser or wait a minute.")
        stream = Stream(user)
        self.streams.add(stream)
        return stream

    def close(self, stream: Stream) -> None:
        self.streams.discard(stream)
        stream.end()

    def drop(self, stream: Stream) -> None:
        logger.info("live stream of user %s closed (session over or client stalled)", stream.user_id)
        self.close(stream)

    def publish(self, stream: Stream, message) -> None:
        if not stream.put(message):
            self.drop(stream)

    async def follow(self, stream: Stream, after: int | None):
        """The text of the answer: the events after `after` (the head when None), then live ones."""
        async with self.db.read() as conn:
            head, pruned = await queries.head(conn)
            if after is None:
                after = head
            backlog = [] if after >= head else await queries.events_after(conn, after, BACKLOG + 1)
        if after < pruned or after > head or len(backlog) > BACKLOG:
            backlog, (stream.last, text) = [], reload(head)
            yield text
        else:
            stream.last = after
        for event in backlog:
            stream.last = event.chain_position
            if visible(event, stream.user_id, stream.role):
                yield change(event)[1]
        async for text in stream.messages():
            yield text

    # ---- the fan-out -----------------------------------------------------------------------

    async def check_holders(self) -> None:
        """Closes the streams whose session has ended; notes the others' roles as they are now."""
        streams = list(self.streams)  # not those opened during the query: their sessions were not read
        if not streams:
            return
        async with self.db.read() as conn:
            alive = await queries.holders(conn, {s.session_id for s in streams}, utcnow(), self.config)
        for stream in streams:
            if (holder := alive.get(stream.session_id)) is None:
                self.drop(stream)
            else:
                stream.role = holder[1]

    async def deliver(self) -> None:
        """Hands every event committed since the last round to the streams that may see it."""
        while True:
            async with self.db.quick() as conn:  # after every commit: reads by key, in the fast lane
                if self.position is None:
                    head, _ = await queries.head(conn)
                    self.position, self.mark = head, await queries.mark(conn, head)
                    return
                # A round in one read: the event last handed out, its hash still the mark (the
                # same chain), and those after it. Anything else is looked into (`checked`).
                events = await queries.events_after(conn, self.position - 1, BATCH + 1)
                if events[:1] and (events[0].chain_position, events[0].chain_hash) == (self.position, self.mark):
                    events = events[1:]
                else:
                    events = await self.checked(conn)
            if not events:
                return
            await self.check_holders()
            for event in events:
                message = change(event)
                for stream in list(self.streams):
                    if visible(event, stream.user_id, stream.role):
                        self.publish(stream, message)
            self.position, self.mark = events[-1].chain_position, events[-1].chain_hash
            if len(events) < BATCH:
                return

    async def checked(self, conn) -> list:
        """The events after the last one handed out, once its place has been checked: the chain
        may have started, been pruned up to it, or been replaced."""
        head, pruned = await queries.head(conn)
        if head < self.position or await queries.mark(conn, self.position) != self.mark:
            # Another chain: a database restored (or emptied, between tests), shorter than this
            # one was or grown as long. Its newest events go out again; streams and browsers
            # drop those they have, and a stream that had passed on more than this chain holds
            # is told to reload.
            self.position = max(pruned, head - BACKLOG)
            self.mark = await queries.mark(conn, self.position)
            for stream in list(self.streams):
                if stream.last > head:
                    self.publish(stream, Rewind(head))
        return await queries.events_after(conn, self.position, BATCH)

    async def beat(self) -> None:
        await self.check_holders()
        for stream in list(self.streams):
            self.publish(stream, PING)

    def presence(self, data: dict) -> None:
        text = f"event: presence\ndata: {json.dumps(data)}\n\n"
        for stream in list(self.streams):
            if stream.role in STAFF:
                self.publish(stream, (None, text))

    async def announce(self, conn, data: dict) -> None:
        """Sends presence `data` to the staff's streams in every process once `conn` commits."""
        if self.db.is_sqlite:  # one process: straight to its streams
            after_commit(conn, partial(self.presence, data))
        else:
            await conn.execute(select(func.pg_notify(PRESENCE_CHANNEL, json.dumps(data))))

    async def sweep(self) -> None:
        """Presence past its time (an editor who left without saying so) is deleted and announced."""
        async with self.db.write() as conn:
            for user_id, editor_id, editor in await queries.expire(conn, utcnow()):
                await self.announce(conn, {"row": user_id, "editor": editor, "editor_id": editor_id, "editing": False})

    # ---- the process's task ----------------------------------------------------------------

    async def listen(self) -> None:
        """PostgreSQL: (re)opens the listening connection when it is not open."""
        if self.db.is_sqlite or (self.listener is not None and not self.listener.is_closed()):
            return
        import asyncpg
        url = make_url(self.db.url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.listener = await asyncpg.connect(url)
        await self.listener.add_listener(SEALED_CHANNEL, lambda *_: self.wake.set())
        await self.listener.add_listener(PRESENCE_CHANNEL, lambda _c, _p, _ch, payload: self.presence(json.loads(payload)))
        self.wake.set()  # what was committed while nobody listened

    async def run(self, stopping: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        SEALED.listeners.add(self.wake)
        self.running = True
        next_beat = next_sweep = loop.time()
        try:
            while not stopping.is_set():
                try:
                    await self.listen()
                    await self.deliver()
                    if loop.time() >= next_beat:
                        next_beat = loop.time() + self.config.live_heartbeat
                        await self.beat()
                    if loop.time() >= next_sweep:
                        next_sweep = loop.time() + POLL_SECONDS
                        await self.sweep()
                except Exception:  # a database briefly away must not end live updates for good
                    logger.exception("live updates: a round failed")
                rest = min(next_beat, next_sweep, loop.time() + POLL_SECONDS) - loop.time()
                waits = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(self.wake.wait())]
                try:
                    await asyncio.wait(waits, timeout=max(rest, 0), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in waits:
                        waiting.cancel()
                self.wake.clear()
        finally:
            SEALED.listeners.discard(self.wake)
            self.running = False
            self.shut()
            if self.listener is not None:
                await self.listener.close()

    def shut(self) -> None:
        """Ends every stream and opens no more: the server is stopping."""
        self.stopping = True
        for stream in list(self.streams):
            self.close(stream)

    async def shut_when(self, event, every: float = 0.1) -> None:
        """Ends every stream as soon as `event` (Hypercorn's shutdown event) is set: streams never
        end by themselves, and the server waits for open answers before it stops."""
        while not event.is_set():
            await asyncio.sleep(every)
        self.shut()
