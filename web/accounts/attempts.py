"""Checking a password under the throttle, wherever one is typed: the login form, and the
profile's "current password" before a change.

The attempt is counted before the (slow) check, in the transaction that reads the lock; a
right password is forgiven afterwards, in the transaction of what it allowed.
"""
from dataclasses import dataclass

from ..core.context import client_key, settings
from . import passwords, throttle
from .devices import device_key


@dataclass(frozen=True)
class Check:
    valid: bool
    wait: int = 0  # seconds to wait: the password was not checked at all
    new_hash: str | None = None  # the stored hash uses outdated parameters: this replaces it


def keys_for(user, identifier: str = "") -> list[str]:
    """The keys an attempt counts against: a browser with this account's device cookie only
    its own; anyone else the client's address and the account (or the unknown name)."""
    if user is not None and (device := device_key(user.id)):
        return [device]
    return [f"ip:{client_key()}", f"account:{user.id}" if user else throttle.name_key(identifier)]


async def check_password(db, keys: list[str], password: str, password_hash: str | None) -> Check:
    config = settings()
    async with db.write() as conn:
        wait = await throttle.reserve(conn, keys, config.throttle_free_failures, config.throttle_window)
    if wait:
        return Check(False, wait)
    valid, new_hash = await passwords.verify(password, password_hash)
    return Check(valid, 0, new_hash)


async def forgive(conn, keys: list[str]) -> None:
    """A right password: the address gets its attempt back, the account or device starts afresh."""
    for key in keys:
        if key.startswith("ip:"):
            await throttle.refund(conn, key, settings().throttle_free_failures)
        else:
            await throttle.clear(conn, key)
