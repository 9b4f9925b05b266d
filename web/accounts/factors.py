"""Second factors: an authenticator app (TOTP) and its recovery codes. Every write of
totp_factors and recovery_codes is here, and every check of a code.

A code is checked in the caller's write transaction, after a throttle attempt has been
counted in it (attempts.py): parallel guesses queue on the throttle's rows. A TOTP code is
accepted one step either side of now, and only for a step later than the last one used: the
conditional UPDATE of last_used_step decides it, so of two parallel submissions of one code
exactly one succeeds, on either database. The code that confirms an enrolment uses up its
step too: it has been typed, and may have been seen.
"""
import time
from dataclasses import dataclass

from sqlalchemy import and_, delete, exists, func, insert, or_, select, update

from ..core.context import client_key, settings
from ..core.db import utcnow
from ..core.tables import passkeys, recovery_codes, totp_factors
from ..mail import outbox
from ..mail.messages import compose, link
from . import attempts, recovery_codes as codes, throttle, totp
from .devices import device_key
from .factor_crypto import Keyring, UnknownKey, keyring

TOTP, RECOVERY, PASSKEY = "totp", "recovery", "passkey"


def HAS_FACTOR(user_id_column):  # noqa: N802 (reads as the SQL condition it is)
    """Whether the account behind `user_id_column` has a second factor it can log in with."""
    return or_(exists().where(totp_factors.c.user_id == user_id_column, totp_factors.c.confirmed_at.is_not(None)),
               exists().where(passkeys.c.user_id == user_id_column))


@dataclass(frozen=True)
class Status:
    """What the profile shows: the app enrolled (or waiting for its first code), codes left."""
    totp_confirmed_at: object = None
    pending: bool = False
    recovery_left: int = 0


@dataclass(frozen=True)
class Verdict:
    ok: bool
    wait: int = 0  # seconds to wait: throttled, nothing was checked
    factor: str | None = None  # TOTP or RECOVERY when ok
    recovery_left: int | None = None  # after a recovery code was used


async def has_factor(conn, user_id: int) -> bool:
    return bool((await conn.execute(select(HAS_FACTOR(user_id)))).scalar())


async def kinds(conn, user_id: int) -> set[str]:
    """The kinds of factor the account can log in with."""
    status = await get_status(conn, user_id)
    has_passkey = (await conn.execute(select(exists().where(passkeys.c.user_id == user_id)))).scalar()
    return {kind for kind, present in ((TOTP, status.totp_confirmed_at), (RECOVERY, status.recovery_left),
                                       (PASSKEY, has_passkey)) if present}


async def get_status(conn, user_id: int) -> Status:
    row = (await conn.execute(select(totp_factors.c.confirmed_at).where(totp_factors.c.user_id == user_id))).first()
    left = (await conn.execute(select(func.count()).select_from(recovery_codes).where(
        recovery_codes.c.user_id == user_id, recovery_codes.c.used_at.is_(None)))).scalar_one()
    if row is None:
        return Status(recovery_left=left)
    return Status(row.confirmed_at, row.confirmed_at is None, left)


# ---- enrolment -------------------------------------------------------------------------

async def start_enrolment(conn, user_id: int, ring: Keyring) -> str | None:
    """A new secret waiting for its first code (replacing one that waited); None when the
    account already has an app enrolled."""
    current = (await conn.execute(select(totp_factors.c.confirmed_at).where(
        totp_factors.c.user_id == user_id).with_for_update())).first()
    if current is not None and current.confirmed_at is not None:
        return None
    secret = totp.new_secret()
    key_id, token = ring.encrypt(secret)
    await conn.execute(delete(totp_factors).where(totp_factors.c.user_id == user_id))
    await conn.execute(insert(totp_factors).values(user_id=user_id, key_id=key_id, secret=token, created_at=utcnow()))
    return secret


async def pending_secret(conn, user_id: int, ring: Keyring) -> str | None:
    row = (await conn.execute(select(totp_factors).where(
        totp_factors.c.user_id == user_id, totp_factors.c.confirmed_at.is_(None)))).first()
    return ring.decrypt(row.key_id, row.secret) if row else None


async def confirm_enrolment(conn, user_id: int, code: str, ring: Keyring, now: float) -> list[str] | None:
    """The waiting secret confirmed by its first code, which uses up its step; returns the new
    recovery codes (to show once), or None when the code is wrong or nothing was waiting."""
    row = (await conn.execute(select(totp_factors).where(
        totp_factors.c.user_id == user_id, totp_factors.c.confirmed_at.is_(None)).with_for_update())).first()
    if row is None:
        return None
    step = totp.matching_step(ring.decrypt(row.key_id, row.secret), code.replace(" ", ""), now)
    if step is None:
        return None
    confirmed = await conn.execute(update(totp_factors).where(
        totp_factors.c.user_id == user_id, totp_factors.c.confirmed_at.is_(None)).values(
        confirmed_at=utcnow(), last_used_step=step))
    if confirmed.rowcount != 1:
        return None
    return await replace_recovery_codes(conn, user_id, ring)


async def confirm_enrolment_throttled(conn, user_id: int, code: str, ring: Keyring,
                                      now: float) -> tuple[list[str] | None, int]:
    """confirm_enrolment, counted like any code (the pending secret is guessable too): the new
    recovery codes or None, and the seconds to wait when locked (then nothing was checked)."""
    if wait := await reserve_attempt(conn, user_id):
        return None, wait
    if new := await confirm_enrolment(conn, user_id, code, ring, now):
        await attempts.forgive(conn, throttle_keys(user_id))
    return new, 0


async def cancel_enrolment(conn, user_id: int) -> None:
    await conn.execute(delete(totp_factors).where(totp_factors.c.user_id == user_id,
                                                  totp_factors.c.confirmed_at.is_(None)))


async def replace_recovery_codes(conn, user_id: int, ring: Keyring) -> list[str]:
    """Ten new codes; the old set, used or not, is gone."""
    new = codes.generate()
    now = utcnow()
    await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    rows = []
    for code in new:
        key_id, digest = next(iter(ring.code_hashes(user_id, code).items()))  # the newest key's
        rows.append({"user_id": user_id, "key_id": key_id, "code_hash": digest, "created_at": now})
    await conn.execute(insert(recovery_codes), rows)
    return new


async def remove_app(conn, user_id: int) -> bool:
    """The authenticator app and its recovery codes gone (its owner's wish); whether it was set up."""
    removed = await conn.execute(delete(totp_factors).where(totp_factors.c.user_id == user_id,
                                                            totp_factors.c.confirmed_at.is_not(None)))
    if removed.rowcount:
        await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    return bool(removed.rowcount)


async def remove_all(conn, user_id: int) -> bool:
    """Every second factor of the account gone (its owner's wish, an Admin's reset, the CLI);
    whether there was one."""
    had = await has_factor(conn, user_id)
    await conn.execute(delete(totp_factors).where(totp_factors.c.user_id == user_id))
    await conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    await conn.execute(delete(passkeys).where(passkeys.c.user_id == user_id))
    return had


async def notify_reset(conn, config, user, by: str, circumstances: dict | None = None) -> None:
    """Tells the owner that `by` (an Admin, or run.py) removed their factors. Written for the
    command line too, where there is no request: `circumstances` (mailing.circumstances())
    only when there is one."""
    message = compose(config, "factors_changed", to=user.email, subject="The second factors of your account were reset",
                      username=user.username, reset_url=link(config, "/forgot-password"), change="reset", by=by,
                      must_enrol=user.role in config.require_2fa_roles,
                      **(circumstances or {"when": utcnow().strftime("%Y-%m-%d %H:%M UTC"), "ip": "the server itself",
                                           "browser": "the command line"}))
    await outbox.post(conn, message)


# ---- checking a code -------------------------------------------------------------------

def throttle_keys(user_id: int) -> list[str]:
    """What a code attempt counts against: this browser's device cookie for the account, or
    else the client's address and the account's codes (apart from its passwords: a right
    password, which forgives those, must not forgive wrong codes)."""
    if device := device_key(user_id):
        return [device]
    return [f"ip:{client_key()}", f"factor:{user_id}"]


async def reserve_attempt(conn, user_id: int) -> int:
    """One code attempt on the account counted before its check (throttle.reserve): 0, or the
    seconds to wait when locked."""
    config = settings()
    return await throttle.reserve(conn, throttle_keys(user_id), config.throttle_free_failures, config.throttle_window)


async def use_totp(conn, user_id: int, code: str, ring: Keyring, now: float) -> bool:
    row = (await conn.execute(select(totp_factors).where(
        totp_factors.c.user_id == user_id, totp_factors.c.confirmed_at.is_not(None)))).first()
    if row is None:
        return False
    step = totp.matching_step(ring.decrypt(row.key_id, row.secret), code, now)
    if step is None:
        return False
    used = await conn.execute(update(totp_factors).where(
        totp_factors.c.user_id == user_id, totp_factors.c.confirmed_at.is_not(None),
        or_(totp_factors.c.last_used_step.is_(None), totp_factors.c.last_used_step < step),
    ).values(last_used_step=step))
    return used.rowcount == 1


async def use_recovery_code(conn, user_id: int, code: str, ring: Keyring) -> int | None:
    """Uses up the code when it is one of the account's unused ones: how many are left then;
    None when it is not."""
    matches = [and_(recovery_codes.c.key_id == key_id, recovery_codes.c.code_hash == digest)
               for key_id, digest in ring.code_hashes(user_id, code).items()]
    used = await conn.execute(update(recovery_codes).where(
        recovery_codes.c.user_id == user_id, recovery_codes.c.used_at.is_(None), or_(*matches),
    ).values(used_at=utcnow()))
    if used.rowcount == 0:
        return None
    return (await get_status(conn, user_id)).recovery_left


async def verify_second_factor(conn, user_id: int, code: str, now: float | None = None) -> Verdict:
    """Checks a code typed by the owner of account `user_id`, in the caller's write
    transaction, which must commit even when the code is wrong: the attempt stays counted. Six
    digits are an app's code; anything else is tried as a recovery code."""
    if wait := await reserve_attempt(conn, user_id):
        return Verdict(False, wait)
    ring = keyring(settings())
    verdict = Verdict(False)
    if codes.looks_like_totp(code):
        if await use_totp(conn, user_id, code.replace(" ", ""), ring, time.time() if now is None else now):
            verdict = Verdict(True, factor=TOTP)
    elif (typed := codes.normalise(code)) is not None:
        if (left := await use_recovery_code(conn, user_id, typed, ring)) is not None:
            verdict = Verdict(True, factor=RECOVERY, recovery_left=left)
    if verdict.ok:
        await attempts.forgive(conn, throttle_keys(user_id))
    return verdict


# ---- keys ------------------------------------------------------------------------------

async def rekey(conn, ring: Keyring) -> dict[str, int]:
    """Every TOTP secret not under the newest key re-encrypted under it. Recovery codes cannot
    be (only their hashes are kept): those under an older key keep working while that key is
    listed, and are counted so the operator knows whether the key may go yet."""
    moved = 0
    rows = (await conn.execute(select(totp_factors).where(totp_factors.c.key_id != ring.newest_id)
                               .with_for_update())).all()
    for row in rows:
        try:
            plain = ring.decrypt(row.key_id, row.secret)
        except UnknownKey as error:
            raise UnknownKey(f"account #{row.user_id}'s secret: {error}; put that key back in FACTOR_KEYS "
                             "(after the newest) and run this again") from None
        key_id, token = ring.encrypt(plain)
        await conn.execute(update(totp_factors).where(totp_factors.c.user_id == row.user_id).values(
            key_id=key_id, secret=token))
        moved += 1
    old_codes = (await conn.execute(select(func.count(func.distinct(recovery_codes.c.user_id))).where(
        recovery_codes.c.key_id != ring.newest_id, recovery_codes.c.used_at.is_(None)))).scalar_one()
    return {"secrets": moved, "accounts_with_old_codes": old_codes}
