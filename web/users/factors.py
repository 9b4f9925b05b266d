"""An Admin resets another user's second factors (a lost phone and lost recovery codes): the
account logs in with its password alone until its owner sets one up again, at once when
REQUIRE_2FA_ROLES names its role. Re-authenticated, audited against that user, and its owner
told by mail."""
from quart import Blueprint, abort, current_app, g, request

from ..accounts import factors, mailing
from ..accounts.reauthentication import reauthenticated
from ..core import audit_trail as audit
from ..core.access import allow
from ..core.context import client_ip, settings
from ..core.render import go, is_htmx, toast
from .lookup import live_user_or_404
from .routes import back_to, table_changed

bp = Blueprint("user_factors", __name__)


@bp.post("/users/<int:user_id>/factors/reset")
@allow("Admin")
@reauthenticated
async def reset(user_id: int):
    if user_id == g.user.id:
        abort(409, "Change your own second factor from your profile.")
    back = (await request.form).get("back", "")
    async with current_app.db.write() as conn:
        user = await live_user_or_404(conn, user_id)
        if removed := await factors.remove_all(conn, user_id):
            await audit.record(conn, "second_factors_reset", "user", user_id, actor=g.user, ip=client_ip(),
                               changes={"factors": [True, False]})
            await factors.notify_reset(conn, settings(), user, g.user.username, mailing.circumstances())
    await toast(f"Second factors of {user.username} removed; they were told by mail." if removed
                else f"{user.username} had no second factor.", "success" if removed else "warning")
    if not is_htmx():
        return go(back_to(back))
    return await table_changed(back)
