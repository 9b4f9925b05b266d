"""Password hashing (argon2id via pwdlib, off the event loop) and the password policy.

Policy after NIST SP 800-63B-4 and OWASP ASVS 5: 15 to 256 Unicode code points, anything
allowed, no composition rules, not a common breached password, not containing the
username or the email address.
"""
import asyncio
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

from pwdlib import PasswordHash

MIN_LENGTH = 15
MAX_LENGTH = 256
COMMON_LIST = Path(__file__).parent / "data" / "common-passwords.txt"

hasher = PasswordHash.recommended()


def _lower_priority() -> None:
    """The hashing thread yields the CPU to the event loop's: one argon2 call spends about
    120 ms of CPU on four lanes, so a burst of logins would otherwise slow every page.
    Linux keeps a nice value per thread, and argon2's lane threads inherit it."""
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


# One hash at a time per process: each holds 64 MiB while it runs, so a burst of logins
# waits in this queue rather than taking 64 MiB (and every core) per login.
_hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argon2", initializer=_lower_priority)


async def _off_loop(function, *args):
    return await asyncio.get_running_loop().run_in_executor(_hashing, function, *args)


@cache
def common_passwords() -> frozenset[str]:
    return frozenset(line.strip().lower() for line in COMMON_LIST.read_text(encoding="utf-8").splitlines())


@cache
def dummy_hash() -> str:
    """What an unknown user's password is checked against, so both take as long."""
    return hasher.hash("not a password of anyone: only spends the time of a verify")


async def hash_password(password: str) -> str:
    return await _off_loop(hasher.hash, password)


async def verify(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """(valid, new hash when the stored one uses outdated parameters)."""
    if password_hash is None:
        await _off_loop(hasher.verify, password, dummy_hash())
        return False, None
    return await _off_loop(hasher.verify_and_update, password, password_hash)


def problem(password: str, username: str = "", email: str = "") -> str | None:
    """Why this password is refused, in words for the person choosing it; None if fine."""
    length = len(password)
    if length == 0:
        return "Choose a password."
    if length < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters ({length} so far). A few unrelated words work well."
    if length > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters ({length} entered)."
    lowered = password.lower()
    if lowered in common_passwords() or lowered.strip() in common_passwords():
        return "This password is one of the most common ones and easy to guess. Choose another."
    local_part = email.partition("@")[0].lower()
    for label, value in (("username", username.lower()), ("email address", local_part)):
        if len(value) >= 3 and value in lowered:
            return f"The password must not contain your {label}."
    return None

