"""GET /events: the signed-in person's live stream (text/event-stream), and the chain position
signed-in pages are drawn at (`<body data-live-after>`), where static/live.js resumes from."""
import asyncio

from quart import Blueprint, current_app, g, make_response, request

from ..core.access import signed_in
from ..core.background import in_every_worker
from . import presence
from .broker import Broker, Refused
from .queries import head

bp = Blueprint("live", __name__)

# How long a browser waits before reconnecting a stream that dropped (EventSource's retry).
RETRY_MS = 3000


def resume_from() -> int | None:
    """Where the client is: Last-Event-ID (the browser's reconnection), else ?after= (the page's
    data-live-after); None for the current head."""
    text = request.headers.get("Last-Event-ID") or request.args.get("after", "")
    return int(text) if text.isdecimal() and len(text) < 19 else None


@bp.get("/events")
@signed_in
async def events():
    broker: Broker = current_app.live
    try:
        stream = broker.open(g.user)
    except Refused as refusal:
        return refusal.message, refusal.status, {"Retry-After": "60", "Content-Type": "text/plain; charset=utf-8"}
    after = resume_from()

    async def body():
        try:
            yield f"retry: {RETRY_MS}\n\n"
            async for text in broker.follow(stream, after):
                yield text
        finally:
            broker.close(stream)

    response = await make_response(body(), 200, {
        "Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    response.timeout = None  # open for as long as the page is
    return response


async def live_after():
    """The chain position a signed-in page is drawn at, read before the page reads anything: a
    change committed meanwhile comes again on the stream rather than never. Read, not taken
    from the broker's last round: after a database is restored that position belongs to
    another chain, and a page drawn at it would drop every change up to it."""
    if g.get("user") is not None and request.method == "GET":
        async with current_app.db.quick() as conn:
            g.live_after = (await head(conn))[0]


def init_app(app) -> None:
    app.live = Broker(app.db, app.config["GATEHOUSE"])
    app.register_blueprint(bp)
    app.register_blueprint(presence.bp)
    app.before_request(live_after)
    app.context_processor(lambda: {"live_after": g.get("live_after")})
    in_every_worker(app, "live_task", app.live.run)

    @app.after_serving
    async def end_streams():
        app.live.shut()
        if watching := getattr(app, "live_shutdown_watch", None):
            watching.cancel()


def shut_with(app, event) -> None:
    """Ends the streams as soon as Hypercorn's `event` says the worker is stopping."""
    @app.before_serving
    async def watch():
        app.live_shutdown_watch = asyncio.get_running_loop().create_task(app.live.shut_when(event))
