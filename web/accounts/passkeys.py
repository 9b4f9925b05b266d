"""Passkeys (WebAuthn credentials) and the challenges waiting for an authenticator's answer.
Every write of the passkeys and passkey_challenges tables is here; the ceremony that uses
them is webauthn_ceremony.py.

A challenge is stored as its sha256 with what it is for and whose it is, and lives five
minutes: the database, not a worker's memory, so whichever worker gets the answer can check
it. An answer uses its challenge up by deleting the row, whatever the outcome.
"""
import hashlib
import unicodedata
from datetime import timedelta

from sqlalchemy import delete, func, insert, select, update

from ..core.db import utcnow
from ..core.tables import PASSKEY_NAME_MAX, passkey_challenges, passkeys, users

CHALLENGE_LIFETIME = timedelta(minutes=5)
MOST_PER_ACCOUNT = 20
# Ceremonies one account may have open at once, per purpose (a few tabs): asking for more
# drops the oldest, so a session cannot fill the table. Passwordless sign-ins (no account
# yet) are bounded per client address by their route instead.
LIVE_CHALLENGES = 5


def challenge_id(challenge: bytes) -> str:
    return hashlib.sha256(challenge).hexdigest()


async def store_challenge(conn, challenge: bytes, purpose: str, user_id: int | None,
                          user_handle: str | None = None) -> None:
    if user_id is not None:
        mine = (passkey_challenges.c.purpose == purpose) & (passkey_challenges.c.user_id == user_id)
        newest = select(passkey_challenges.c.id).where(mine).order_by(
            passkey_challenges.c.expires_at.desc()).limit(LIVE_CHALLENGES - 1)
        await conn.execute(delete(passkey_challenges).where(mine, passkey_challenges.c.id.not_in(newest)))
    await conn.execute(insert(passkey_challenges).values(
        id=challenge_id(challenge), purpose=purpose, user_id=user_id, user_handle=user_handle,
        expires_at=utcnow() + CHALLENGE_LIFETIME))


async def take_challenge(conn, challenge: bytes, purpose: str, user_id: int | None):
    """Uses the challenge up; its row (user_handle) when it was live, for this purpose and
    this user (None: anyone's, a passwordless sign-in), else None."""
    owner = passkey_challenges.c.user_id.is_(None) if user_id is None else passkey_challenges.c.user_id == user_id
    taken = await conn.execute(delete(passkey_challenges).where(
        passkey_challenges.c.id == challenge_id(challenge), passkey_challenges.c.purpose == purpose, owner,
        passkey_challenges.c.expires_at > utcnow()).returning(passkey_challenges.c.user_handle))
    return taken.first()


# ---- passkeys --------------------------------------------------------------------------

def name_problem(name: str) -> str | None:
    """Why a passkey's name is refused, or None."""
    if not name:
        return "Give the passkey a name."
    if len(name) > PASSKEY_NAME_MAX:
        return f"Use at most {PASSKEY_NAME_MAX} characters."
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in name):
        return "Use letters, digits, spaces and punctuation only."
    return None


async def list_for(conn, user_id: int) -> list:
    query = select(passkeys).where(passkeys.c.user_id == user_id).order_by(passkeys.c.created_at, passkeys.c.id)
    return (await conn.execute(query)).all()


async def count_for(conn, user_id: int) -> int:
    query = select(func.count()).select_from(passkeys).where(passkeys.c.user_id == user_id)
    return (await conn.execute(query)).scalar_one()


async def user_handle_of(conn, user_id: int) -> str | None:
    """The handle the account's passkeys carry (None before its first)."""
    query = select(passkeys.c.user_handle).where(passkeys.c.user_id == user_id).limit(1)
    return (await conn.execute(query)).scalar()


async def owner_of(conn, credential_id: str):
    """The account (users row) the passkey with this credential id belongs to, or None."""
    query = select(users).join(passkeys, passkeys.c.user_id == users.c.id).where(
        passkeys.c.credential_id == credential_id)
    return (await conn.execute(query)).first()


async def lock_by_credential(conn, credential_id: str):
    """The passkey with this credential id, locked until the transaction ends (its sign count
    is compared and moved on in it), or None."""
    query = select(passkeys).where(passkeys.c.credential_id == credential_id).with_for_update()
    return (await conn.execute(query)).first()


async def add(conn, user_id: int, credential_id: str, user_handle: str, public_key: bytes, sign_count: int,
              name: str, transports: list[str]) -> int:
    return (await conn.execute(insert(passkeys).values(
        user_id=user_id, credential_id=credential_id, user_handle=user_handle, public_key=public_key,
        sign_count=sign_count, name=name, transports=transports, created_at=utcnow(),
    ).returning(passkeys.c.id))).scalar_one()


async def record_use(conn, passkey_id: int, sign_count: int) -> None:
    await conn.execute(update(passkeys).where(passkeys.c.id == passkey_id).values(
        sign_count=sign_count, last_used_at=utcnow()))


async def rename(conn, user_id: int, passkey_id: int, name: str) -> str | None:
    """The passkey's old name once renamed; None when the account has no such passkey."""
    row = (await conn.execute(select(passkeys.c.name).where(
        passkeys.c.id == passkey_id, passkeys.c.user_id == user_id).with_for_update())).first()
    if row is None:
        return None
    await conn.execute(update(passkeys).where(passkeys.c.id == passkey_id).values(name=name))
    return row.name


async def remove(conn, user_id: int, passkey_id: int) -> str | None:
    """The removed passkey's name; None when the account has no such passkey."""
    gone = await conn.execute(delete(passkeys).where(
        passkeys.c.id == passkey_id, passkeys.c.user_id == user_id).returning(passkeys.c.name))
    return gone.scalar()


async def remove_all(conn, user_id: int) -> int:
    """Every passkey of the account gone (an Admin's reset of its factors, the CLI)."""
    return (await conn.execute(delete(passkeys).where(passkeys.c.user_id == user_id))).rowcount
