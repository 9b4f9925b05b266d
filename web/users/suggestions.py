"""Users as the command palette suggests them while a name or address is typed: the users
table's own search (queries.py), a few at a time, for whoever may see that table."""
from quart import Blueprint, current_app, request

from ..core.access import staff
from .queries import SUGGESTIONS, find_users

bp = Blueprint("user_suggestions", __name__)

TYPED_MAX = 100  # longer than any username; an address this long is found by its start


@bp.get("/users/suggestions")
@staff
async def suggestions():
    q = request.args.get("q", "").strip()[:TYPED_MAX]
    if not q:
        return {"users": []}
    async with current_app.db.read() as conn:
        found = await find_users(conn, q, SUGGESTIONS)
    return {"users": [{"id": u.id, "username": u.username, "email": u.email, "url": f"/users/{u.id}"}
                      for u in found]}
