"""Links mailed to an account: a password reset, an address to confirm, an invitation.

The link carries a random token; the database keeps only its SHA-256, so a copy of the
table opens nothing. Opening a link (GET) only shows a form: mail scanners follow links.
Submitting the form uses the token up, by deleting its row in the transaction of the change
it allows: of two submissions at once, exactly one gets the row.

A token is valid while it has not expired, its account is live, and the account still has
the address it was sent to; a reset token, also while the password is the one it was made
under (any change of password ends it). A newer token of the same purpose replaces the older.

A report token is the exception to both rules. It goes to the old address when a change of
address is asked for or made ("it was not me"), and its point is to work after the address
has moved on: it stays valid while the account still has the address it was sent to, or has
an address confirmed after the token was made (the change it warned of, or a later one made
the same way). An address set otherwise since (an Admin's edit) ends it: that change is not
one the owner of the old address was warned of. And it does not replace earlier report
tokens: otherwise whoever moved the address could kill the old address's link by asking
for another change (whose notice goes to their own address).
"""
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select

from ..core.db import utcnow
from ..core.tables import account_tokens, users

RESET, CONFIRM, EMAIL, INVITE, REPORT = "reset", "confirm", "email", "invite", "report"
LIFETIMES = {
    RESET: timedelta(minutes=30),
    CONFIRM: timedelta(days=2),
    EMAIL: timedelta(days=1),
    INVITE: timedelta(days=7),  # INVITATION_DAYS overrides it
    REPORT: timedelta(days=7),
}
TOKEN_MAX = 100  # longer than any token made here: anything longer is not looked up


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def password_digest(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()


@dataclass(frozen=True)
class Found:
    """A valid token, with the account it belongs to (as read with the token)."""
    user: object
    email: str
    created_at: datetime


async def issue(conn, user, purpose: str, *, email: str | None = None, lifetime: timedelta | None = None,
                now: datetime | None = None) -> str:
    """A new token for `user`, replacing any other of the same purpose (but REPORT); in the
    caller's write transaction. `email` is the address it is sent to (the account's by default)."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    if purpose != REPORT:
        await revoke(conn, user.id, purpose)
    await conn.execute(insert(account_tokens).values(
        id=digest(token), user_id=user.id, purpose=purpose, email=email or user.email,
        password_digest=password_digest(user.password_hash) if purpose == RESET else "",
        created_at=now, expires_at=now + (lifetime or LIFETIMES[purpose])))
    return token


async def revoke(conn, user_id: int, *purposes: str) -> int:
    """Ends the account's tokens of these purposes (all of them when none is named)."""
    query = delete(account_tokens).where(account_tokens.c.user_id == user_id)
    if purposes:
        query = query.where(account_tokens.c.purpose.in_(purposes))
    return (await conn.execute(query)).rowcount


def _valid(token_row, user, purpose: str, now: datetime) -> bool:
    if user is None or token_row.expires_at <= now or user.deleted_at is not None:
        return False
    if purpose == EMAIL:  # a new address: the account must not have moved on from the old one
        return user.active
    if purpose == REPORT:
        return user.active and (token_row.email.lower() == user.email.lower() or (
            user.email_confirmed_at is not None and user.email_confirmed_at >= token_row.created_at))
    if token_row.email.lower() != user.email.lower():
        return False
    if purpose == RESET:
        return user.active and user.invited_at is None and \
            secrets.compare_digest(token_row.password_digest, password_digest(user.password_hash))
    if purpose == INVITE:
        return user.invited_at is not None
    return user.active


def _plausible(token: str) -> bool:
    return 0 < len(token) <= TOKEN_MAX and token.isascii()


def _by_token(token: str, purpose: str):
    return (account_tokens.c.id == digest(token), account_tokens.c.purpose == purpose)


async def find(conn, token: str, purpose: str, now: datetime | None = None) -> Found | None:
    """The valid token of `purpose`, without using it up (what a GET shows); or None."""
    if not _plausible(token):
        return None
    token_row = (await conn.execute(select(account_tokens).where(*_by_token(token, purpose)))).first()
    if token_row is None:
        return None
    user = (await conn.execute(select(users).where(users.c.id == token_row.user_id))).first()
    if not _valid(token_row, user, purpose, now or utcnow()):
        return None
    return Found(user, token_row.email, token_row.created_at)


async def use(conn, token: str, purpose: str, now: datetime | None = None) -> Found | None:
    """Uses the token up in the caller's write transaction and returns what it allows, with the
    account's row locked until that transaction ends; None when it is not (or no longer) valid."""
    if not _plausible(token):
        return None
    token_row = (await conn.execute(
        delete(account_tokens).where(*_by_token(token, purpose)).returning(*account_tokens.c))).first()
    if token_row is None:
        return None
    user = (await conn.execute(select(users).where(users.c.id == token_row.user_id).with_for_update())).first()
    if not _valid(token_row, user, purpose, now or utcnow()):
        return None
    return Found(user, token_row.email, token_row.created_at)


async def pending(conn, user_id: int, purpose: str):
    """The account's token of `purpose` (its address and expiry), or None: what a page shows
    of a pending invitation or change of address."""
    return (await conn.execute(
        select(account_tokens.c.email, account_tokens.c.created_at, account_tokens.c.expires_at)
        .where(account_tokens.c.user_id == user_id, account_tokens.c.purpose == purpose)
        .order_by(account_tokens.c.created_at.desc()).limit(1))).first()

