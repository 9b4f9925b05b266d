"""Pending invitations in the users table: resend one (a new link; the one sent before stops
working) or revoke it. Each is decided on the user's row locked in the write transaction:
Managers handle Customers only, and an invitation accepted meanwhile is left alone."""
from quart import Blueprint, abort, current_app, g, request
from werkzeug.exceptions import TooManyRequests

from ..accounts import invitation, queries as accounts, throttle, tokens
from ..accounts.reauthentication import reauthenticated
from ..core import audit_trail as audit
from ..core.access import staff
from ..core.context import client_ip
from ..core.render import go, is_htmx, toast
from .routes import back_to, changeable_or_abort, undo_url

bp = Blueprint("invitations", __name__)

# Each invitation is mailed again at most this often per hour: enough to fix a lost message,
# too few to flood someone's mailbox from the table.
RESENDS_PER_HOUR = 3
HOUR = 60 * 60


async def pending_or_abort(conn, user_id: int, verb: str):
    """The invited user, locked; 404/403 as for any change, 409 once they have accepted."""
    user = changeable_or_abort(await accounts.lock_user(conn, user_id), verb)
    if user.invited_at is None:
        abort(409, f"{user.username} has already accepted their invitation.")
    return user


def done(back: str):
    """After the change: the page it came from again (without JavaScript), or a refresh of the
    table (htmx)."""
    if not is_htmx():
        return go(back_to(back))
    return "", 204, {"HX-Trigger": '{"users-changed": {}}'}


@bp.post("/users/<int:user_id>/invitation/resend")
@staff
async def resend(user_id: int):
    back = (await request.form).get("back", "")
    async with current_app.db.write() as conn:
        user = await pending_or_abort(conn, user_id, "invite")
        if not user.active:
            abort(409, f"{user.username} is deactivated: activate them before inviting them again.")
        if wait := await throttle.take(conn, f"invite:{user_id}", RESENDS_PER_HOUR, HOUR):
            raise TooManyRequests(f"{user.username} was invited {RESENDS_PER_HOUR} times this hour. "
                                  f"Try again in {wait} seconds.", retry_after=wait)
        await invitation.send(conn, user, g.user.username)
        await audit.record(conn, "invite_resent", "user", user_id, actor=g.user, ip=client_ip(),
                           changes={"sent_to": [None, user.email]})
    await toast(f"Invited {user.username} again: we sent a new link to {user.email}; the earlier one no longer works.")
    return done(back)


@bp.post("/users/<int:user_id>/invitation/revoke")
@staff
@reauthenticated  # a delete, as the table's
async def revoke(user_id: int):
    """Deletes the invited account (a soft delete, like the table's Delete, with its Undo): its
    link stops working at once, and an undo brings the account back without one (Resend)."""
    back = (await request.form).get("back", "")
    async with current_app.db.write() as conn:
        user = await pending_or_abort(conn, user_id, "revoke invitations of")
        await accounts.soft_delete(conn, user_id)
        await tokens.revoke(conn, user_id, tokens.INVITE)
        await audit.record(conn, "invite_revoked", "user", user_id, actor=g.user, ip=client_ip(),
                           changes={"deleted": [False, True]})
    await toast(f"Revoked the invitation of {user.username}.", undo=undo_url(user_id, back_to(back)))
    return done(back)
