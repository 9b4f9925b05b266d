"""Changing one user from the web: the inline save and a revert from the audit log share this
path (rules, version check, last-Admin guard, audit), and the toast's Undo and a revert of a
delete share restore_user. Decisions that depend on the row are taken on it, locked, in the
write transaction."""
from dataclasses import dataclass

from quart import abort, current_app, g
from sqlalchemy.exc import IntegrityError

from ..accounts import invitation, queries as accounts, sessions, tokens
from ..accounts.validation import account_problems, normalise_email
from ..core import audit_trail as audit
from ..core.context import client_ip
from ..core.security import INT32_MAX
from ..core.tables import ROLES

EDITABLE = {"Admin": ("username", "email", "role", "active"), "Manager": ("username", "email", "active")}
LAST_ADMIN = "This is the last active Admin: make someone else an Admin first."


def may_edit(target_role: str) -> bool:
    """Admins edit everyone; Managers edit Customers only."""
    return g.user.role == "Admin" or target_role == "Customer"


def row_values(row) -> dict:
    return {"username": row.username, "email": row.email, "role": row.role, "active": row.active}


async def checked_values(current, wanted: dict) -> tuple[dict, dict]:
    """`current`'s values with `wanted` applied (the email normalised), and their problems."""
    values = {**row_values(current), **wanted}
    errors = {}
    if values["role"] not in ROLES:
        errors["role"] = "Choose one of the roles."
    async with current_app.db.quick() as conn:  # two lookups by index: the fast lane
        errors.update(await account_problems(conn, values["username"], values["email"], None, current))
    if "email" not in errors and values["email"] != current.email:
        values["email"] = normalise_email(values["email"])[0]
    return values, errors


def parse_version(raw: str) -> int:
    try:
        version = int(raw)
    except ValueError:
        version = 0
    if not 1 <= version <= INT32_MAX:
        abort(400, "This form is out of date. Reload the page and try again.")
    return version


async def would_remove_last_admin(conn, target_id: int, becomes_admin: bool) -> bool:
    admins = await accounts.lock_active_admins(conn)
    return admins == [target_id] and not becomes_admin


def may_change(target_role: str, fields) -> bool:
    """Whether the signed-in person may change these fields of a user with this role: Admins
    anything; Managers Customers only, and never a role."""
    return may_edit(target_role) and set(fields) <= set(EDITABLE[g.user.role])


def reverting(event_id: int | None) -> dict:
    """What a change's audit event adds when it reverts an earlier event: a link to it."""
    return {"reverts": [None, event_id]} if event_id else {}


@dataclass
class Edit:
    """An edit of one user as decided: the values asked for (checked, normalised), what they
    change, the problems that stopped it, and the row afterwards (None when someone else saved
    first)."""
    values: dict
    changes: dict
    errors: dict
    saved: object | None


async def edit_user(current, version: int, wanted: dict, reverts: int | None = None) -> Edit:
    """The one way the web changes a user's username, email, role or active flag: the inline
    save and a revert from the audit log. `wanted` is written only if the row is still at
    `version` and the last active Admin stays one; a change that takes rights away ends the
    user's sessions; a new address of an invited user gets the invitation anew (the link sent
    to the old one dies); the audit events (linking the event a revert undoes) are written in
    the same transaction."""
    values, errors = await checked_values(current, wanted)
    changes = audit.diff(row_values(current), values)
    if not may_change(current.role, changes):
        abort(403, "Managers change Customers only, and never roles.")
    saved = current
    if not errors and changes and version != current.version:
        # The form was drawn from another version of the row than the one just authorised: the
        # UPDATE below changes the row only at `current`'s version, so the decision holds for
        # the row it changes, even if a promotion commits in between.
        saved = None
    elif not errors and changes:
        async with current_app.db.write() as conn:
            if current.role == "Admin" and await would_remove_last_admin(
                    conn, current.id, values["role"] == "Admin" and values["active"]):
                errors["role" if values["role"] != "Admin" else "active"] = LAST_ADMIN
            else:
                try:
                    saved = await accounts.update_if_current(conn, current.id, version, values)
                except IntegrityError:
                    saved, errors["username"] = None, "This username or email was just taken."
                if saved:
                    await end_sessions_if_revoked(conn, current.id, changes)
                    await audit.record(conn, "update", "user", current.id, actor=g.user, ip=client_ip(),
                                       changes={**changes, **reverting(reverts)}, target_name=saved.username)
                    if saved.invited_at is not None and saved.active and "email" in changes:
                        await invitation.send(conn, saved, g.user.username)
                        await audit.record(conn, "invite_resent", "user", current.id, actor=g.user,
                                           ip=client_ip(), changes={"sent_to": [None, saved.email]})
    return Edit(values, changes, errors, saved)


async def end_sessions_if_revoked(conn, user_id: int, changes: dict) -> None:
    """A change that takes rights away ends the user's sessions in its own transaction."""
    if sessions.revokes(changes):
        await sessions.end_all(conn, user_id)
    if changes.get("active") == [True, False] or changes.get("deleted") == [False, True]:
        await tokens.revoke(conn, user_id)  # and its mailed links: reactivating revives none


def describe_change(username: str, changes: dict, done: str = "Saved") -> str:
    if not changes:
        return f"No changes to {username}."
    parts = [f"{field} {shown(old)} → {shown(new)}" for field, (old, new) in changes.items()]
    return f"{done} {username}: " + ", ".join(parts) + "."


def shown(value) -> str:
    return "yes" if value is True else "no" if value is False else str(value)


async def restore_user(user_id: int, reverts: int | None = None):
    """Undoes a soft delete (the toast's Undo, or a revert from the audit log), decided on the
    row locked in the write transaction; returns the user as they were."""
    async with current_app.db.write() as conn:
        user = await accounts.lock_user(conn, user_id)
        if user is None or user.deleted_at is None:
            abort(404, "There is no deleted user to restore here.")
        if not may_edit(user.role):
            abort(403, "Managers restore Customers only.")
        await accounts.restore(conn, user_id)
        await audit.record(conn, "restore", "user", user_id, actor=g.user, ip=client_ip(),
                           changes={"deleted": [True, False], **reverting(reverts)})
    return user
