"""The signed-in person's start page: their account, their recent activity, and for Admins
the last day's logins, failed logins and changes, each linking to the audit log."""
from datetime import timedelta

from quart import Blueprint, current_app, g

from ..accounts import queries
from ..audit.queries import CHANGES, AuditFilter, counts_since, recent_by_actor
from ..core.access import signed_in
from ..core.db import utcnow
from ..core.render import render

bp = Blueprint("dashboard", __name__)

RECENT_EVENTS = 10
COUNTED = ("login", "login_failed", *CHANGES)


@bp.get("/dashboard")
@signed_in
async def dashboard():
    since = utcnow() - timedelta(hours=24)
    async with current_app.db.read() as conn:
        account = await queries.get_user(conn, g.user.id)
        events = await recent_by_actor(conn, g.user.id, RECENT_EVENTS)
        counts = await counts_since(conn, since, COUNTED) if g.user.role == "Admin" else None
    stats = None
    if counts is not None:
        window = AuditFilter(since=since.isoformat(timespec="minutes"))
        stats = [
            ("Logins", counts.get("login", 0), window.url(action=("login",))),
            ("Failed logins", counts.get("login_failed", 0), window.url(action=("login_failed",))),
            ("Changes", sum(counts.get(a, 0) for a in CHANGES), window.url(action=CHANGES)),
        ]
    return await render("dashboard/index.html", account=account, events=events, stats=stats)
