"""The users table: search, sort, page, create, edit in place, delete with undo, bulk actions.

Every write checks the version the browser saw (a stale one gets 409), guards the last
active Admin, and writes its audit events in the same transaction.
"""
import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from quart import Blueprint, abort, current_app, g, request
from sqlalchemy.exc import IntegrityError

from ..accounts import invitation, queries as accounts, sessions, throttle, tokens
from ..accounts.reauthentication import reauthenticated, required as reauthentication_required
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
from .queries import COLUMNS, PAGE_SIZES, TableState, load_page, load_row, matching_ids, recent_history
from .sessions import may_see_sessions

bp = Blueprint("users", __name__)

ROWS = "users/rows.html"


def view_from_back(back: str) -> TableState:
    """The table state a form came from, carried in its `back` field as /users?…"""
    return TableState.from_args(dict(parse_qsl(urlsplit(back).query)))


def back_to(back: str) -> str:
    """Where a form sends the browser once done: the user's page it came from, or the table in
    the view it showed. Only ever a path of ours, whatever `back` holds."""
    path = urlsplit(back).path
    return path if re.fullmatch(r"/users/[1-9][0-9]{0,9}", path) else view_from_back(back).url()


def undo_url(user_id: int, back: str) -> str:
    """The toast's Undo of a delete: it restores the user and returns to the same view."""
    return f"/users/{user_id}/restore?" + urlencode({"back": back})


async def table_page(status=200, view: TableState | None = None, **context):
    view = view or TableState.from_args(request.args)
    async with current_app.db.quick() as conn:
        page = await load_page(conn, view)
    context.setdefault("editing", None)
    context.setdefault("creating", None)
    return await render("users/index.html", status, view=view, page=page, columns=COLUMNS,
                        roles=ROLES, editable=EDITABLE[g.user.role], page_sizes=PAGE_SIZES,
                        **context)


async def row_fragment(block: str, status=200, **context):
    context.setdefault("view", TableState())
    return await render(ROWS, status, block=block, roles=ROLES, editable=EDITABLE[g.user.role], **context)


def table_on_page(back: str) -> TableState | None:
    """The view of the users table on the page a write came from: under htmx the page's address
    (hx-replace-url keeps it current, where a form drawn outside the table keeps the `back` it
    was drawn with), else `back`; None when that page is not the table."""
    url = (request.headers.get("HX-Current-URL") if is_htmx() else None) or back
    return view_from_back(url) if urlsplit(url).path == "/users" else None


async def with_summary(back: str, block: str | None = None, **context):
    """The htmx answer to a write of the table: the fragment `block` (none after a write that
    reloads the table) and, out of band, the count and empty state of the view on the page as
    they are now. A row the answer brings is shown whether or not it matches the view."""
    view = table_on_page(back)
    if view is None:
        return await row_fragment(block, view=view_from_back(back), **context) if block else ("", 204)
    async with current_app.db.quick() as conn:
        page = await load_page(conn, view)
    if block is None:
        return await render(ROWS, block="users_summary", oob_swap=True, view=view, page=page, empty=not page.rows)
    return await row_fragment(block, oob=("users_summary",), view=view, page=page, empty=False, **context)


async def table_changed(back: str, focus: int | None = None):
    """The htmx answer to a write after which the table reloads itself (users-changed, landing
    on the row `focus`), with the count out of band when it came from the table."""
    body, status = await with_summary(back)
    return body, status, {"HX-Trigger": json.dumps({"users-changed": {"focus": focus} if focus else {}})}


async def table_row_or_404(user_id: int):
    """The user as their row in the table shows them (lock-out, invitation)."""
    async with current_app.db.quick() as conn:
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
    async with current_app.db.quick() as conn:
        return changeable_or_abort(await accounts.get_user(conn, user_id), verb)


@bp.get("/users")
@staff
async def index():
    body, status = await table_page()
    # The filter form sends every field; the address bar gets the tidy URL of the same view.
    return body, status, {"HX-Replace-Url": TableState.from_args(request.args).url()} \
        if request.headers.get("HX-Trigger") == "users-filters" else {}


# ---- one row: show, edit, save ---------------------------------------------------------

# How many of the user's latest audit events their page shows; the audit log has the rest.
HISTORY_EVENTS = 10


@bp.get("/users/<int:user_id>")
@staff
async def detail(user_id: int):
    """One user's page: the account, its lock-out and invitation, where they are logged in (for
    those who may end it), and what happened to it lately."""
    async with current_app.db.quick() as conn:
        row = await load_row(conn, user_id)
        if row is None:
            abort(404, GONE)
        history = await recent_history(conn, user_id, HISTORY_EVENTS)
        live = await sessions.list_for(conn, user_id) if may_see_sessions() else None
    return await render("users/detail.html", u=row, changeable=may_edit(row.role), history=history, sessions=live,
                        view=TableState.from_args(request.args), alone=TableState(q=row.username))


@bp.get("/users/<int:user_id>/row")
@staff
async def row(user_id: int):
    """The user's row of the table (an edit's Cancel); without JavaScript, the table."""
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
    values = await posted_values()
    # A new role or address (where password resets go) could take an account over; switching
    # off one's own account ends its every session and locks its owner out.
    await reauthentication_required(when=values.get("role", current.role) != current.role
                                    or values["email"] != current.email
                                    or user_id == g.user.id and values["active"] != current.active)
    edit = await edit_user(current, version, values)
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
    back, row = form.get("back", ""), await table_row_or_404(user_id)
    shown = table_on_page(back)
    if shown is not None and not counted_by(shown, edit.changes):
        # The row stays in or out of the view as it was: the count on the page still holds,
        # and counting again (a pass over up to COUNT_LIMIT index entries) was most of a save.
        return await row_fragment("user", view=shown, u=row)
    return await with_summary(back, "user", u=row)


# The fields each of the users table's filters tests (queries.filters); an edit of none of
# them moves no user into or out of the view. "expired" compares the invitation's address
# with the account's; locked-out and second-factor filters test no editable field.
FILTERED_FIELDS = {"q": {"username", "email"}, "role": {"role"}}
STATUS_FIELDS = {"1": {"active"}, "0": {"active"}, "expired": {"email"}}


def counted_by(view: TableState, changes: dict) -> bool:
    """Whether `changes` to one user may change how many users `view` matches."""
    tested = set(STATUS_FIELDS.get(view.active, ()))
    for name, fields in FILTERED_FIELDS.items():
        if getattr(view, name):
            tested |= fields
    return bool(tested & changes.keys())


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
    await reauthentication_required()
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
    return await with_summary(form.get("back", ""), "user", u=await table_row_or_404(user_id))


# ---- delete and undo -------------------------------------------------------------------

@bp.get("/users/<int:user_id>/delete")
@staff
async def confirm_delete(user_id: int):
    """Without JavaScript the dialog is a page of its own."""
    user = await load_changeable_or_403(user_id, "delete")
    return await render("users/confirm_delete.html", u=user, view=TableState.from_args(request.args))


@bp.post("/users/<int:user_id>/delete")
@staff
@reauthenticated
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
    await toast(f"Deleted {user.username}.", undo=undo_url(user_id, view.url()))
    if not is_htmx():
        return go(view.url())
    return await table_changed((await request.form).get("back", ""))


@bp.post("/users/<int:user_id>/restore")
@staff
@reauthenticated  # an account brought back is one created again, password and role included
async def restore(user_id: int):
    back = (await request.form).get("back") or request.args.get("back", "")
    user = await restore_user(user_id)
    await toast(f"Restored {user.username}.")
    if not is_htmx():
        return go(back_to(back))
    return await table_changed(back, focus=user_id)


@bp.post("/users/<int:user_id>/unlock")
@staff
async def unlock(user_id: int):
    """Lifts a lock-out by failed logins (the address's own count stays)."""
    back = (await request.form).get("back", "")
    async with current_app.db.write() as conn:
        user = changeable_or_abort(await accounts.lock_user(conn, user_id), "unlock")
        await throttle.clear(conn, f"account:{user_id}")
        await audit.record(conn, "unlock", "user", user_id, actor=g.user, ip=client_ip())
    await toast(f"Unlocked {user.username}: they can log in again.")
    if not is_htmx():
        return go(back_to(back))
    return await table_changed(back)


# ---- bulk actions ----------------------------------------------------------------------

BULK_ACTIONS = {"activate", "deactivate", "delete", *(f"role:{r}" for r in ROLES)}
# A bulk action over a whole filter changes this many users per write transaction: other
# writes wait for one batch, never for the whole action.
BULK_BATCH = 200


@dataclass(frozen=True)
class BulkRequest:
    action: str
    ids: list[int]
    view: TableState
    matching: TableState | None  # every user this view matches, instead of `ids`


async def parse_bulk() -> BulkRequest:
    """The action and selection a bulk form sent; 400 when either is not one we offer."""
    form = await request.form
    action = form.get("action", "")
    matching = view_from_back(form["matching"]) if form.get("matching") else None
    try:
        ids = sorted({int(i) for i in form.getlist("ids")})
    except ValueError:
        ids = [0]
    if not all(1 <= i <= INT32_MAX for i in ids):
        abort(400, "The selection is not valid. Reload the page and try again.")
    if action not in BULK_ACTIONS:
        abort(400, "Choose an action for the selected users.")
    if not ids and not matching:
        abort(400, "Select at least one user first (x or Space on a row).")
    if action.startswith("role:") and g.user.role != "Admin":
        abort(403, "Only Admins change roles.")
    return BulkRequest(action, ids, view_from_back(form.get("back", "")), matching)


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


REMOVES_ADMIN = {"deactivate", "delete", "role:Manager", "role:Customer"}


@dataclass
class BulkOutcome:
    """What a bulk action did: users changed, and those it left out and why."""
    changed: int = 0
    not_theirs: int = 0       # Admins and Managers, left out of a Manager's action
    kept_self: bool = False   # the person's own account, left out of a delete
    kept_admin: str = ""      # the last active Admin, left as one

    def message(self, label: str) -> str:
        n = self.changed
        said = [f"{label} {n:,} user{'' if n == 1 else 's'}." if n else
                "Nothing to change: the selected users already were so."]
        if self.not_theirs:
            k = self.not_theirs
            said.append(f"{k:,} Admin or Manager account{' was' if k == 1 else 's were'} left as "
                        f"{'it was' if k == 1 else 'they were'}: Managers change Customers only.")
        if self.kept_self:
            said.append("Your own account was left out: you cannot delete it.")
        if self.kept_admin:
            said.append(f"{self.kept_admin} stays the last active Admin.")
        return " ".join(said)


async def plan_bulk(conn, action: str, ids: list[int], outcome: BulkOutcome, strict: bool) -> list[tuple]:
    """(user, columns, changes) for each of these users the action changes, decided on the rows
    as they are inside the write transaction. `strict` (the rows a person ticked): any part not
    allowed aborts the whole action; otherwise (a whole filter) that part is left out and
    counted in `outcome`."""
    admins = set(await accounts.lock_active_admins(conn))  # first, in the order every write takes them
    targets = await accounts.lock_live_users(conn, ids)
    theirs = [t for t in targets if may_edit(t.role)]
    if strict and len(theirs) < len(targets):
        abort(403, "Managers change Customers only; deselect the others.")
    outcome.not_theirs += len(targets) - len(theirs)
    if action == "delete" and any(t.id == g.user.id for t in theirs):
        if strict:
            abort(409, "You cannot delete your own account; deselect it.")
        theirs = [t for t in theirs if t.id != g.user.id]
        outcome.kept_self = True
    removed = {t.id for t in theirs if t.id in admins and action in REMOVES_ADMIN}
    if admins and admins <= removed:
        if strict:
            abort(409, LAST_ADMIN)
        kept = next(t for t in theirs if t.id == (g.user.id if g.user.id in removed else min(removed)))
        theirs.remove(kept)
        outcome.kept_admin = kept.username
    plan = [(target, *bulk_change(action, target)) for target in theirs]
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


async def bulk_over_filter(action: str, view: TableState, outcome: BulkOutcome) -> None:
    """The action on every user the view matches, BULK_BATCH users per transaction, walked by
    id: each batch is chosen, decided and written in one transaction."""
    last = 0
    while True:
        async with current_app.db.write() as conn:
            ids = await matching_ids(conn, view, last, BULK_BATCH)
            if ids:
                plan = await plan_bulk(conn, action, ids, outcome, strict=False)
                await apply_bulk(conn, action, plan)
                outcome.changed += len(plan)
        if len(ids) < BULK_BATCH:
            return
        last = ids[-1]


@bp.post("/users/bulk")
@staff
async def bulk():
    wanted = await parse_bulk()
    await reauthentication_required()
    outcome = BulkOutcome()
    if wanted.matching:
        await bulk_over_filter(wanted.action, wanted.matching, outcome)
    else:
        async with current_app.db.write() as conn:
            plan = await plan_bulk(conn, wanted.action, wanted.ids, outcome, strict=True)
            await apply_bulk(conn, wanted.action, plan)
        outcome.changed = len(plan)
    label = {"activate": "Activated", "deactivate": "Deactivated", "delete": "Deleted"}.get(
        wanted.action, f"Made {wanted.action.split(':', 1)[-1]}")
    await toast(outcome.message(label), "success" if outcome.changed else "warning")
    if not is_htmx():
        return go(wanted.view.url())
    return await table_changed((await request.form).get("back", ""))
