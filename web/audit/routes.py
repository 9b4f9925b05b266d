"""The audit log: browse and filter who did what, and export it. Read-only for everyone."""
import csv
import io
import json

from quart import Blueprint, current_app, g, make_response, request

from ..accounts import queries as accounts
from ..core import audit_trail as audit
from ..core.access import staff
from ..core.context import client_ip
from ..core.render import render
from .queries import ACTIONS, TARGET_TYPES, AuditFilter, export_query, load_page

bp = Blueprint("audit_log", __name__)

CSV_COLUMNS = ("id", "occurred_at", "actor_id", "actor_name", "action", "target_type", "target_id", "changes", "ip")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BATCH = 500


@bp.get("/audit")
@staff
async def index():
    view = AuditFilter.from_args(request.args)
    async with current_app.db.read() as conn:
        page = await load_page(conn, view)
        subject = await accounts.get_user(conn, int(view.target_id)) \
            if view.target_type == "user" and view.target_id else None
    body, status = await render("audit/index.html", view=view, page=page, subject=subject,
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
    """The current filter as CSV, streamed from a server-side cursor: memory stays flat."""
    view = AuditFilter.from_args(request.args)
    async with current_app.db.write() as conn:
        await audit.record(conn, "export", "audit", None, actor=g.user, ip=client_ip(),
                           changes={"filter": [None, view.url()]})

    db = current_app.db  # the generator runs after the request context has gone

    async def rows():
        yield csv_line(CSV_COLUMNS)
        async with db.read() as conn:
            query = await export_query(conn, view)
            if query is None:
                return
            result = await conn.stream(query.execution_options(yield_per=BATCH))
            async for batch in result.partitions(BATCH):
                yield "".join(csv_row(event) for event in batch)

    response = await make_response(rows(), 200, {
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": 'attachment; filename="gatehouse-audit.csv"',
    })
    response.timeout = None  # a million events take longer than Quart's 60 s default
    return response
