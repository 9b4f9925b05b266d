"""An Admin's view of another user's live sessions, on the user's page: where they are logged
in, and ending one or all of them (a lost phone, a suspected theft). Each end needs a recent
proof, as the profile's do (else a stolen session could end its owner's own), and is audited
against that user."""
from quart import Blueprint, current_app, g

from ..accounts import sessions
from ..accounts.reauthentication import reauthenticated
from ..core import audit_trail as audit
from ..core.access import allow
from ..core.context import client_ip
from ..core.render import go, is_htmx, render, toast
from .lookup import live_user_or_404

bp = Blueprint("user_sessions", __name__)

ROLES = ("Admin",)


def may_see_sessions() -> bool:
    """Whether the signed-in person sees and ends other users' sessions."""
    return g.user.role in ROLES


def page_url(user_id: int) -> str:
    return f"/users/{user_id}#user-sessions"


async def sessions_list(user_id: int):
    """The user's live sessions, as their page's sessions section."""
    async with current_app.db.read() as conn:
        user = await live_user_or_404(conn, user_id)
        live = await sessions.list_for(conn, user_id)
    return await render("users/detail.html", block="user_sessions", u=user, sessions=live)


async def ended_answer(user_id: int, ended: int, done: str, nothing: str):
    """A toast saying what ended, then the sessions left: the section for htmx; without
    JavaScript, the user's page again."""
    await toast(done if ended else nothing, "success" if ended else "warning")
    if not is_htmx():
        return go(page_url(user_id))
    return await sessions_list(user_id)


async def record_end(conn, user_id: int, ended: int) -> None:
    if ended:
        await audit.record(conn, "session_end", "user", user_id, actor=g.user, ip=client_ip(),
                           changes={"sessions_ended": [None, ended]})


@bp.post("/users/<int:user_id>/sessions/<sid>/end")
@allow(*ROLES)
@reauthenticated
async def end(user_id: int, sid: str):
    async with current_app.db.write() as conn:
        user = await live_user_or_404(conn, user_id)
        ended = await sessions.end(conn, sid, user_id)
        await record_end(conn, user_id, ended)
    return await ended_answer(user_id, ended, f"Session of {user.username} ended.",
                              "That session had already ended.")


@bp.post("/users/<int:user_id>/sessions/end-all")
@allow(*ROLES)
@reauthenticated
async def end_all(user_id: int):
    async with current_app.db.write() as conn:
        user = await live_user_or_404(conn, user_id)
        ended = await sessions.end_all(conn, user_id)
        await record_end(conn, user_id, ended)
    return await ended_answer(user_id, ended, f"Ended {ended} session{'' if ended == 1 else 's'} of {user.username}.",
                              f"{user.username} had no sessions left.")
