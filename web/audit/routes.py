"""The audit log: browse and filter who did what, export it, and revert a change to a user.
Nobody edits or deletes events from the web."""
import asyncio
import json
from contextlib import aclosing
from urllib.parse import parse_qsl, urlsplit

from quart import Blueprint, abort, current_app, g, make_response, request
from werkzeug.datastructures import MultiDict

from ..accounts import queries as accounts
from ..accounts.reauthentication import required as reauthentication_required
from ..core import audit_trail as audit
from ..core.access import staff
from ..core.context import client_ip
from ..core.keyset import Page
from ..core.spreadsheet import csv_line
from ..core.render import go, is_htmx, render, toast
from ..core.security import same_origin
from ..users.edits import (
    EDITABLE, describe_change, edit_user, may_change, parse_version, restore_user, row_values,
)
from .queries import (
    ACTIONS, TARGET_TYPES, AuditFilter, conditions, export_batch, get_event, load_page, user_id_named, users_by_id,
)

bp = Blueprint("audit_log", __name__)

CSV_COLUMNS = ("id", "occurred_at", "actor_id", "actor_name", "action", "target_type", "target_id", "target_name",
               "changes", "ip")
BATCH = 500
# A client that leaves a batch of an export unread this long is dropped: a stalled reader
# cannot keep a task and its batch in memory for ever.
STALLED_SECONDS = 30


@bp.get("/audit")
@staff
async def index():
    view = AuditFilter.from_args(request.args)
    async with current_app.db.read() as conn:
        context = await log_context(conn, view, await load_page(conn, view))
    body, status = await render("audit/index.html", **context)
    if request.headers.get("HX-Trigger") == "audit-filters":
        return body, status, {"HX-Replace-Url": view.url()}
    return body, status


async def log_context(conn, view: AuditFilter, page: Page, **more) -> dict:
    """What the log's page shows besides its events: whose history it is, the chain's state
    (Admins), and which events the viewer may revert."""
    subject = await history_subject(conn, view)
    chain = await audit.chain_head(conn) if g.user.role == "Admin" else None
    return {"view": view, "page": page, "subject": subject, "chain": chain, "actions": ACTIONS,
            "target_types": TARGET_TYPES, "offers": await revert_offers(conn, page.rows), **more}


async def history_subject(conn, view: AuditFilter):
    """The user whose history the view shows (by the picker's username or a link's id), if any."""
    if view.target:
        user_id = await user_id_named(conn, view.target)
    else:
        user_id = int(view.target_id) if view.target_type == "user" and view.target_id else None
    return await accounts.get_user(conn, user_id) if user_id else None


# ---- one event, and reverting it -------------------------------------------------------
# A revert goes through the users table's own write (edit_user, restore_user): its version
# check, the last-Admin guard, who may change whom, sessions ended, the audit event. It is
# recorded as what it does to the user ("update", or "restore" for a delete), with
# "reverts": [null, <event id>] among its changes: the log's filters, the dashboard's count of
# changes and a user's history take it as the change it is, and it can be reverted in turn.

FIELDS = EDITABLE["Admin"]
REVERTIBLE = ("update", "delete")
EVENT_ID_MAX = 2**63 - 1


def revert_fields(event) -> list[str]:
    """The user's fields an update event changed, which a revert sets back."""
    return [f for f in (event.changes or {}) if f in FIELDS] if event.action == "update" else []


def revert_refusal(event, target) -> tuple[int, str] | None:
    """(status, reason) when the signed-in person cannot revert `event` now; None when they can.
    `target` is the event's user as they are now, None when there is no such user."""
    if event.target_type != "user" or event.action not in REVERTIBLE or \
            (event.action == "update" and not revert_fields(event)):
        return 404, "Only changes to users and deletes can be reverted."
    # SQLite hands a purged user's id to the next new account: that one is not the target.
    if target is None or target.created_at > event.occurred_at:
        return 404, "This user was purged for good: there is nothing left to revert."
    if event.action == "delete" and target.deleted_at is None:
        return 409, f"{target.username} is not deleted any more: there is nothing to restore."
    if event.action == "update" and target.deleted_at is not None:
        return 409, f"{target.username} was deleted since: restore them first."
    if not may_change(target.role, revert_fields(event)):
        return 403, "Managers revert changes to Customers only, and never a change of role."
    return None


async def revert_offers(conn, events) -> set[int]:
    """The ids of the events among `events` that the signed-in person may revert now."""
    candidates = [e for e in events if e.target_type == "user" and e.action in REVERTIBLE and e.target_id]
    if not candidates:
        return set()
    targets = await users_by_id(conn, {e.target_id for e in candidates})
    return {e.id for e in candidates if revert_refusal(e, targets.get(e.target_id)) is None}


async def load_event(event_id: int):
    """The event and its user as they are now (None when gone); 404 for no such event."""
    async with current_app.db.read() as conn:
        event = await get_event(conn, event_id) if 1 <= event_id <= EVENT_ID_MAX else None
        if event is None:
            abort(404, "There is no such event.")
        target = (await users_by_id(conn, [event.target_id])).get(event.target_id) \
            if event.target_type == "user" and event.target_id else None
    return event, target


async def revertible_or_abort(event_id: int):
    event, target = await load_event(event_id)
    if refusal := revert_refusal(event, target):
        abort(*refusal)
    return event, target


def view_from_back(back: str) -> AuditFilter:
    """The log's view a form came from, carried in its `back` field as /audit?…"""
    return AuditFilter.from_args(MultiDict(parse_qsl(urlsplit(back).query)))


def in_place() -> bool:
    """An htmx request for a part of the page (not a boosted link, which wants the page)."""
    return is_htmx() and not request.headers.get("HX-Boosted")


@bp.get("/audit/<int:event_id>")
@staff
async def show(event_id: int):
    """The event's row (htmx: the revert panel's Cancel), or a page of this one event."""
    event, _ = await load_event(event_id)
    view = AuditFilter.from_args(request.args)
    async with current_app.db.read() as conn:
        if in_place():
            offer = event.id in await revert_offers(conn, [event])
        else:
            context = await log_context(conn, AuditFilter(), Page([event], 1, None, None, None), single=event)
    if in_place():
        return await render("audit/revert.html", block="event_row", e=event, view=view, offer=offer, reverting=False)
    return await render("audit/index.html", **context)


async def revert_answer(status: int, event, target, view: AuditFilter, chosen, conflicts=(),
                        errors=None, stale: bool = False):
    """The revert form: a page of its own, or the event's row opened in place (htmx)."""
    context = {"e": event, "target": target, "view": view, "fields": revert_fields(event),
               "now": row_values(target), "chosen": chosen, "conflicts": conflicts,
               "errors": errors or {}, "stale": stale, "reverting": True}
    return await render("audit/revert.html", status, block="event_row" if in_place() else None, **context)


@bp.get("/audit/<int:event_id>/revert")
@staff
async def revert_form(event_id: int):
    event, target = await revertible_or_abort(event_id)
    view = AuditFilter.from_args(request.args)
    return await revert_answer(200, event, target, view, chosen=revert_fields(event))


@bp.post("/audit/<int:event_id>/revert")
@staff
async def revert(event_id: int):
    """Sets back the chosen fields of an update (to their value before it), or restores the
    user a delete removed. A field someone changed since the event is not overwritten unless
    the form says so ("Restore anyway")."""
    event, target = await revertible_or_abort(event_id)
    form = await request.form
    view = view_from_back(form.get("back", ""))
    if event.action == "delete":
        await reauthentication_required()  # as the users table's Undo
        await restore_user(target.id, reverts=event.id)
        await toast(f"Restored {target.username}: event #{event.id} reverted.")
        return await reverted(event, view)
    chosen = [f for f in revert_fields(event) if f in form.getlist("field")]
    version = parse_version(form.get("version", ""))
    if not chosen:
        return await revert_answer(422, event, target, view, chosen,
                                   errors={"fields": "Choose at least one field to set back."})
    conflicts = changed_since(event, target, chosen)
    if conflicts and form.get("force") != "1":
        return await revert_answer(409, event, target, view, chosen, conflicts)
    # As in the users table: a new role or address could take an account over, and switching
    # off one's own account locks its owner out.
    guarded = ("role", "email", "active") if target.id == g.user.id else ("role", "email")
    await reauthentication_required(when=any(event.changes[f][0] != getattr(target, f) for f in guarded
                                             if f in chosen))
    edit = await edit_user(target, version, {f: event.changes[f][0] for f in chosen}, reverts=event.id)
    if edit.errors:
        return await revert_answer(422, event, target, view, chosen, conflicts, edit.errors)
    if edit.saved is None:
        _, target = await revertible_or_abort(event_id)
        return await revert_answer(409, event, target, view, chosen, changed_since(event, target, chosen), stale=True)
    await toast(describe_change(target.username, edit.changes, f"Event #{event.id} reverted on"))
    return await reverted(event, view)


def changed_since(event, target, fields) -> list[str]:
    """The fields whose value is no longer what the event made it: someone changed them since."""
    now = row_values(target)
    return [f for f in fields if now[f] != event.changes[f][1]]


async def reverted(event, view: AuditFilter):
    """After a revert: back to the log (without JavaScript), or the log's table reloaded in
    place with the new event in it and focus back on the event reverted."""
    if not in_place():
        return go(view.url())
    async with current_app.db.read() as conn:
        context = await log_context(conn, view, await load_page(conn, view), focus=event.id)
    body, status = await render("audit/index.html", block="audit_table", **context)
    return body, status, {"HX-Retarget": "#audit-table", "HX-Reswap": "outerHTML"}


def csv_row(event) -> str:
    return csv_line([
        event.id, event.occurred_at.isoformat(timespec="seconds") + "Z", event.actor_id, event.actor_name,
        event.action, event.target_type, event.target_id, event.target_name,
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
    await reauthentication_required()
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
