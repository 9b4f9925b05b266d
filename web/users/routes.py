"""The users table: search, sort, page, create, edit in place, delete with undo, bulk actions.

Every write checks the version the browser saw (a stale one gets 409), guards the last
active Admin, and writes its audit events in the same transaction.
"""
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from quart import Blueprint, abort, current_app, g, request
from sqlalchemy.exc import IntegrityError

from ..accounts import invitation, queries as accounts, sessions, throttle, tokens
from ..accounts.validation import account_problems, normalise_email
from ..core import audit_trail as audit
from ..core.access import staff
from ..core.context import client_ip
from ..core.render import go, is_htmx, render, toast
from ..core.security import INT32_MAX
from ..core.tables import ROLES
from .edits import (
    EDITABLE, LAST_ADMIN, describe_change, edit_user, end_sessions_if_revoked, may_edit, parse_version, restore_user,
    row_values,
)
from .lookup import GONE, live_or_404, live_user_or_404
from .queries import COLUMNS, TableState, load_page, load_row

bp = Blueprint("users", __name__)

ROWS = "users/rows.html"


def view_from_back(back: str) -> TableState:
    """The table state a form came from, carried in its `back` field as /users?…"""
    return TableState.from_args(dict(parse_qsl(urlsplit(back).query)))


async def table_page(status=200, view: TableState | None = None, **context):
    view = view or TableState.from_args(request.args)
    async with current_app.db.read() as conn:
        page = await load_page(conn, view)
    context.setdefault("editing", None)
    context.setdefault("creating", None)
    return await render("users/index.html", status, view=view, page=page, columns=COLUMNS,
                        roles=ROLES, editable=EDITABLE[g.user.role], **context)


async def row_fragment(block: str, status=200, **context):
    context.setdefault("view", TableState())
    return await render(ROWS, status, block=block, roles=ROLES, editable=EDITABLE[g.user.role], **context)


async def table_row_or_404(user_id: int):
    """The user as their row in the table shows them (lock-out, invitation)."""
    async with current_app.db.read() as conn:
        row = await load_row(conn, user_id)
    if row is None:
        abort(404, GONE)
    return row


def changeable_or_abort(user, verb: str = "change"):
    """404 for no (live) user, 403 unless this person may change them: Admins anyone,
    Managers Customers only."""
    live_or_404(user)
    if not may_edit(user.role):
        abort(403, f"Managers {verb} Customers only.")
    return user


async def load_changeable_or_403(user_id: int, verb: str = "change"):
    async with current_app.db.read() as conn:
        return changeable_or_abort(await accounts.get_user(conn, user_id), verb)


@bp.get("/users")
@staff
async def index():
    body, status = await table_page()
    # The filter form sends every field; the address bar gets the tidy URL of the same view.
    return body, status, {"HX-Replace-Url": TableState.from_args(request.args).url()} \
        if request.headers.get("HX-Trigger") == "users-filters" else {}


# ---- one row: show, edit, save ---------------------------------------------------------

@bp.get("/users/<int:user_id>")
@staff
async def show(user_id: int):
    if not is_htmx():
        return go(TableState.from_args(request.args).url())
    return await row_fragment("user", u=await table_row_or_404(user_id))


@bp.get("/users/<int:user_id>/edit")
@staff
async def edit(user_id: int):
    user = await load_changeable_or_403(user_id, "edit")
    state = {"u": user, "values": row_values(user), "errors": {}, "conflict": None,
             "view": TableState.from_args(request.args)}
    if is_htmx():
        return await row_fragment("user", editing=True, **state)
    return await table_page(editing=state)


async def posted_values() -> dict:
    """The editable fields the form sent; the others are not read (a Manager posting `role`
    changes nothing)."""
    form = await request.form
    return {name: form.get("active") == "1" if name == "active" else form.get(name, "").strip()
            for name in EDITABLE[g.user.role]}


@bp.post("/users/<int:user_id>")
@staff
async def save(user_id: int):
    current = await load_changeable_or_403(user_id, "edit")
    form = await request.form
    version = parse_version(form.get("version", ""))
    view = view_from_back(form.get("back", ""))
    edit = await edit_user(current, version, await posted_values())
    if not edit.errors and edit.saved is None:
        return await conflict(user_id, edit.values, view)
    if edit.errors:
        state = {"u": current, "values": edit.values, "errors": edit.errors, "conflict": None, "view": view}
        if is_htmx():
            return await row_fragment("user", 422, editing=True, **state)
        return await table_page(422, view=view, editing=state)
    await toast(describe_change(edit.values["username"], edit.changes))
    if not is_htmx():
        return go(view.url())
    return await row_fragment("user", u=await table_row_or_404(user_id), view=view)


async def conflict(user_id: int, mine: dict, view: TableState):
    """Someone saved first: show their values beside ours; saving again overwrites theirs."""
    async with current_app.db.read() as conn:
        theirs = await live_user_or_404(conn, user_id)
    state = {"u": theirs, "values": mine, "errors": {}, "conflict": row_values(theirs), "view": view}
    if is_htmx():
        return await row_fragment("user", 409, editing=True, **state)
    return await table_page(409, view=view, editing=state)


# ---- create ----------------------------------------------------------------------------

@bp.get("/users/new")
@staff
async def new():
    state = {"values": {"role": "Customer"}, "errors": {}, "view": TableState.from_args(request.args)}
    if is_htmx():
        return await row_fragment("user_new", **state)
    return await table_page(creating=state)


@bp.post("/users")
@staff
async def create():
    """A new account with no password, and an invitation mailed to it in the same transaction:
    the invitee chooses their own password (accounts/invitation.py)."""
    form = await request.form
    view = view_from_back(form.get("back", ""))
    values = {name: form.get(name, "").strip() for name in ("username", "email", "role")}
    if g.user.role != "Admin":
        values["role"] = "Customer"
    async with current_app.db.read() as conn:
        errors = await account_problems(conn, values["username"], values["email"], None)
    if values["role"] not in ROLES:
        errors["role"] = "Choose one of the roles."
    state = {"values": values, "errors": errors, "view": view}
    if errors:
        if is_htmx():
            return await row_fragment("user_new", 422, **state)
        return await table_page(422, view=view, creating=state)
    email = normalise_email(values["email"])[0]
    try:
        async with current_app.db.write() as conn:
            user_id = await accounts.create_invited_user(conn, values["username"], email, values["role"])
            await invitation.send(conn, await accounts.get_user(conn, user_id), g.user.username)
            await audit.record(conn, "create", "user", user_id, actor=g.user, ip=client_ip(), changes={
                "username": [None, values["username"]], "email": [None, email], "role": [None, values["role"]],
                "invited": [None, True]})
    except IntegrityError:
        state["errors"] = {"username": "This username or email was just taken."}
        return await row_fragment("user_new", 422, **state) if is_htmx() else await table_page(422, view=view, creating=state)
    await toast(f"Invited {values['username']}: we sent a link to {email}.")
    if not is_htmx():
        return go(view.url())
    return await row_fragment("user", u=await table_row_or_404(user_id), view=view)


# ---- delete and undo -------------------------------------------------------------------

@bp.get("/users/<int:user_id>/delete")
@staff
async def confirm_delete(user_id: int):
    """Without JavaScript the dialog is a page of its own."""
    user = await load_changeable_or_403(user_id, "delete")
    return await render("users/confirm_delete.html", u=user, view=TableState.from_args(request.args))


@bp.post("/users/<int:user_id>/delete")
@staff
async def delete(user_id: int):
    if user_id == g.user.id:
        abort(409, "You cannot delete your own account.")
    view = view_from_back((await request.form).get("back", ""))
    async with current_app.db.write() as conn:
        # Who may delete whom is decided on the row as it is in this transaction: a Manager's
        # delete must not pass on a Customer whom an Admin promoted a moment ago. The Admins'
        # lock comes first, in the same order as an inline save takes it.
        admins = await accounts.lock_active_admins(conn)
        user = await accounts.lock_user(conn, user_id)
        changeable_or_abort(user, "delete")
        if admins == [user_id]:
            abort(409, LAST_ADMIN)
        await accounts.soft_delete(conn, user_id)
        await sessions.end_others(conn, user_id, keep_sid=None)
        await tokens.revoke(conn, user_id)
        await audit.record(conn, "delete", "user", user_id, actor=g.user, ip=client_ip(),
                           changes={"deleted": [False, True]})
    await toast(f"Deleted {user.username}.", undo=f"/users/{user_id}/restore")
    if not is_htmx():
        return go(view.url())
    return "", 204, {"HX-Trigger": '{"users-changed": {}}'}


@bp.post("/users/<int:user_id>/restore")
@staff
async def restore(user_id: int):
    user = await restore_user(user_id)
    await toast(f"Restored {user.username}.")
    if not is_htmx():
        return go("/users")
    return "", 204, {"HX-Trigger": f'{{"users-changed": {{"focus": {user_id}}}}}'}


@bp.post("/users/<int:user_id>/unlock")
@staff
async def unlock(user_id: int):
    """Lifts a lock-out by failed logins (the address's own count stays)."""
    view = view_from_back((await request.form).get("back", ""))
    async with current_app.db.write() as conn:
        user = changeable_or_abort(await accounts.lock_user(conn, user_id), "unlock")
        await throttle.clear(conn, f"account:{user_id}")
        await audit.record(conn, "unlock", "user", user_id, actor=g.user, ip=client_ip())
    await toast(f"Unlocked {user.username}: they can log in again.")
    if not is_htmx():
        return go(view.url())
    return "", 204, {"HX-Trigger": '{"users-changed": {}}'}


# ---- bulk actions ----------------------------------------------------------------------

BULK_ACTIONS = {"activate", "deactivate", "delete", *(f"role:{r}" for r in ROLES)}


@dataclass(frozen=True)
class BulkRequest:
    action: str
    ids: list[int]
    view: TableState


async def parse_bulk() -> BulkRequest:
    """The action and selection a bulk form sent; 400 when either is not one we offer."""
    form = await request.form
    action = form.get("action", "")
    try:
        ids = sorted({int(i) for i in form.getlist("ids")})
    except ValueError:
        ids = [0]
    if not all(1 <= i <= INT32_MAX for i in ids):
        abort(400, "The selection is not valid. Reload the page and try again.")
    if action not in BULK_ACTIONS:
        abort(400, "Choose an action for the selected users.")
    if not ids:
        abort(400, "Select at least one user first (x or Space on a row).")
    if action.startswith("role:") and g.user.role != "Admin":
        abort(403, "Only Admins change roles.")
    return BulkRequest(action, ids, view_from_back(form.get("back", "")))


def bulk_change(action: str, target) -> tuple[dict, dict]:
    """(the columns to write, the audit changes) that `action` makes to one user; empty when
    the user already is so."""
    if action == "delete":
        return {}, {"deleted": [False, True]}
    before = row_values(target)
    after = dict(before)
    if action in {"activate", "deactivate"}:
        after["active"] = action == "activate"
    else:
        after["role"] = action.split(":", 1)[1]
    changes = audit.diff(before, after)
    return {k: after[k] for k in changes}, changes


async def plan_bulk(conn, request_: BulkRequest) -> list[tuple]:
    """(user, columns, changes) for each selected user the action changes, decided on the rows
    as they are inside the write transaction; aborts the whole action when any part of it is
    not allowed."""
    action = request_.action
    admins = set(await accounts.lock_active_admins(conn))  # first, in the order every write takes them
    targets = await accounts.lock_live_users(conn, request_.ids)
    if any(not may_edit(t.role) for t in targets):
        abort(403, "Managers change Customers only; deselect the others.")
    if action == "delete" and any(t.id == g.user.id for t in targets):
        abort(409, "You cannot delete your own account; deselect it.")
    removed = {t.id for t in targets if t.id in admins and action in {"deactivate", "delete", "role:Manager", "role:Customer"}}
    if admins and admins <= removed:
        abort(409, LAST_ADMIN)
    plan = [(target, *bulk_change(action, target)) for target in targets]
    return [(target, values, changes) for target, values, changes in plan if changes]


async def apply_bulk(conn, action: str, plan: list[tuple]) -> None:
    for target, values, changes in plan:
        if action == "delete":
            await accounts.soft_delete(conn, target.id)
        else:
            await accounts.update_user(conn, target.id, values)
        await end_sessions_if_revoked(conn, target.id, changes)
        await audit.record(conn, "delete" if action == "delete" else "update", "user", target.id,
                           actor=g.user, ip=client_ip(), changes=changes)


@bp.post("/users/bulk")
@staff
async def bulk():
    wanted = await parse_bulk()
    async with current_app.db.write() as conn:
        plan = await plan_bulk(conn, wanted)
        await apply_bulk(conn, wanted.action, plan)
    label = {"activate": "Activated", "deactivate": "Deactivated", "delete": "Deleted"}.get(
        wanted.action, f"Made {wanted.action.split(':', 1)[-1]}")
    count = len(plan)
    await toast(f"{label} {count} user(s)." if count else "Nothing to change: the selected users already were so.")
    if not is_htmx():
        return go(wanted.view.url())
    return "", 204, {"HX-Trigger": '{"users-changed": {}}'}
