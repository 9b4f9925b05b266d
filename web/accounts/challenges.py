"""The half-done login: the password was right, a second factor (or enrolling one) is still to
come. The state is a row in login_challenges, bound to this browser by a random token in a
cookie (only its sha256 is stored), and lives five minutes. Until the second step is done
there is no session: nothing but that step's pages is open to the browser.
"""
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from quart import after_this_request, request
from sqlalchemy import delete, insert, select

from ..core.context import settings
from ..core.db import utcnow
from ..core.tables import login_challenges, users
from .sessions import session_id

LIFETIME = timedelta(minutes=5)
VERIFY, ENROL = "verify", "enrol"


class ChallengeGone(Exception):
    """The challenge ended meanwhile (used by a parallel request, expired)."""


@dataclass(frozen=True)
class Challenge:
    id: str
    user_id: int
    username: str
    remember: bool
    next_path: str
    stage: str  # VERIFY or ENROL
    expires_at: datetime


def cookie_name() -> str:
    return "__Host-gatehouse-login" if settings().production else "gatehouse-login"


def _set_cookie(value: str, max_age: int) -> None:
    @after_this_request
    async def set_cookie(response):
        response.set_cookie(cookie_name(), value, max_age=max_age, httponly=True, samesite="Lax",
                            secure=settings().production, path="/")
        return response


async def begin(conn, user_id: int, remember: bool, next_path: str, stage: str) -> None:
    """A challenge for this browser (replacing the one it had), its cookie set with the answer."""
    token, now = secrets.token_urlsafe(32), utcnow()
    if old := request.cookies.get(cookie_name()):
        await conn.execute(delete(login_challenges).where(login_challenges.c.id == session_id(old)))
    await conn.execute(insert(login_challenges).values(
        id=session_id(token), user_id=user_id, remember=remember, next_path=next_path, stage=stage,
        created_at=now, expires_at=now + LIFETIME))
    _set_cookie(token, int(LIFETIME.total_seconds()))


async def pending(conn, lock: bool = False) -> Challenge | None:
    """This browser's live challenge, for an account that may still log in; `lock` (in a write
    transaction) holds it until the transaction ends."""
    token = request.cookies.get(cookie_name())
    if not token:
        return None
    query = (select(login_challenges, users.c.username).join(users, users.c.id == login_challenges.c.user_id)
             .where(login_challenges.c.id == session_id(token), login_challenges.c.expires_at > utcnow(),
                    users.c.active.is_(True), users.c.deleted_at.is_(None)))
    row = (await conn.execute(query.with_for_update(of=login_challenges) if lock else query)).first()
    if row is None:
        return None
    return Challenge(row.id, row.user_id, row.username, row.remember, row.next_path, row.stage, row.expires_at)


async def consume(conn, challenge: Challenge) -> None:
    """The challenge used up, in the transaction that completes the login (ChallengeGone when
    another request was first); its cookie dropped with the answer."""
    gone = await conn.execute(delete(login_challenges).where(login_challenges.c.id == challenge.id))
    if gone.rowcount != 1:
        raise ChallengeGone()
    _set_cookie("", 0)


async def end_all(conn, user_id: int) -> None:
    """Every half-done login of the account ends: its password changed (or its owner reported a
    takeover), so the password step they passed no longer holds."""
    await conn.execute(delete(login_challenges).where(login_challenges.c.user_id == user_id))


def expired(now: datetime):
    return login_challenges.c.expires_at <= now
