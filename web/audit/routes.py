"""The audit log: browse and filter who did what, and export it. Read-only for everyone."""
import asyncio
import csv
import io
import json
from contextlib import aclosing

from quart import Blueprint, abort, current_app, g, make_response, request

from ..accounts import queries as accounts
from ..core import audit_trail as audit
from ..core.access import staff
from ..core.context import client_ip
from ..core.render import render
from ..core.security import same_origin
from .queries import ACTIONS, TARGET_TYPES, AuditFilter, conditions, export_batch, load_page

bp = Blueprint("audit_log", __name__)

CSV_COLUMNS = ("id", "occurred_at", "actor_id", "actor_name", "action", "target_type", "target_id", "changes", "ip")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BATCH = 500
# A client that leaves a batch of an export unread this long is dropped: a stalled reader
# cannot keep a task and its batch in memory for ever.
STALLED_SECONDS = 30


@bp.get("/audit")
@staff
async def index():
    view = AuditFilter.from_args(request.args)
    async with current_app.db.read() as conn:
        page = await load_page(conn, view)
        subject = await accounts.get_user(conn, int(view.target_id)) \
            if view.target_type == "user" and view.target_id else None
        chain = await audit.chain_head(conn) if g.user.role == "Admin" else None
    body, status = await render("audit/index.html", view=view, page=page, subject=subject, chain=chain,
                                actions=ACTIONS, target_types=TARGET_TYPES)
    if request.headers.get("HX-Trigger") == "audit-filters":
        return body, status, {"HX-Replace-Url": view.url()}
    return body, status


def spreadsheet_safe(value) -> str:
    """A cell a spreadsheet shows as text: a leading =, +, -, @ would make it a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_line(values) -> str:
    out = io.StringIO()
    csv.writer(out).writerow([spreadsheet_safe(v) for v in values])
    return out.getvalue()


def csv_row(event) -> str:
    return csv_line([
        event.id, event.occurred_at.isoformat(timespec="seconds") + "Z", event.actor_id, event.actor_name,
        event.action, event.target_type, event.target_id,
        json.dumps(event.changes, ensure_ascii=False, sort_keys=True) if event.changes else "", event.ip,
    ])


@bp.get("/audit.csv")
@staff
async def export():
    """The current filter as CSV, streamed in batches read one at a time: memory stays flat,
    and between batches no connection is held, however slowly the client reads."""
    if not same_origin():
        # A link on another site must not make a signed-in person's browser write an event.
        abort(403, "Exports start from the audit log's own page.")
    view = AuditFilter.from_args(request.args)
    db = current_app.db  # the generator runs after the request context has gone
    async with db.write() as conn:
        await audit.record(conn, "export", "audit", None, actor=g.user, ip=client_ip(),
                           changes={"filter": [None, view.url()]})
        # Before the first byte: what goes wrong here is an error page, not a cut stream.
        where = await conditions(conn, view)

    async def rows():
        yield csv_line(CSV_COLUMNS)
        last = None
        while where is not None:
            async with db.read() as conn:
                batch = await export_batch(conn, view, where, last, BATCH)
            if batch:
                yield "".join(csv_row(event) for event in batch)
            if len(batch) < BATCH:
                return
            last = (batch[-1].occurred_at, batch[-1].id)

    response = await make_response(dropped_when_stalled(rows(), STALLED_SECONDS), 200, {
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": 'attachment; filename="gatehouse-audit.csv"',
    })
    response.timeout = None  # a million events take longer than Quart's 60 s default
    return response


async def dropped_when_stalled(chunks, seconds: float):
    """The chunks, each of which the client must take within `seconds`, or it is dropped.

    Hypercorn has no send timeout, and Quart's response timeout bounds the whole answer, which
    for a big export may rightly take minutes. So a timer cancels the task sending the answer
    (Quart's, suspended in the send this generator is waiting on); Quart takes the cancellation
    as the end of the answer, Hypercorn as the end of the connection."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    async with aclosing(chunks):
        async for chunk in chunks:
            alarm = loop.call_later(seconds, task.cancel)
            try:
                yield chunk
            finally:
                alarm.cancel()
