"""POST /users/<id>/presence: "I have this user's editor open" (editing=1, refreshed every
PRESENCE_REFRESH seconds while it is) or "I left it" (editing=0). Advisory, never a lock: the
save still resolves conflicts by version. Stored in the database, so that every worker's staff
streams hear of it; a row not refreshed for PRESENCE_TTL seconds is swept and announced gone
(broker.sweep). Not an audit event: opening an editor changes nothing, and a refresh every
15 s per editor would bury the log's real changes."""
from datetime import timedelta

from quart import Blueprint, abort, current_app, g, request

from ..core.access import staff
from ..core.db import utcnow
from . import queries

bp = Blueprint("presence", __name__)

PRESENCE_REFRESH = 15
PRESENCE_TTL = 40  # two refreshes missed, and a slow network's worth more


@bp.post("/users/<int:user_id>/presence")
@staff
async def presence(user_id: int):
    editing = (await request.form).get("editing", "")
    if editing not in {"0", "1"}:
        abort(400, "editing must be 1 (the editor is open) or 0 (it was closed).")
    broker = current_app.live
    async with current_app.db.write() as conn:
        if not await queries.user_exists(conn, user_id):
            abort(404)
        if editing == "1":
            await queries.announce(conn, user_id, g.user.id, utcnow() + timedelta(seconds=PRESENCE_TTL))
        else:
            await queries.withdraw(conn, user_id, g.user.id)
        await broker.announce(conn, {"row": user_id, "editor": g.user.username, "editor_id": g.user.id,
                                     "editing": editing == "1"})
    return "", 204
