"""Password hashing (argon2id via pwdlib, off the event loop) and the password policy.

Policy after NIST SP 800-63B-4 and OWASP ASVS 5: 15 to 256 Unicode code points, anything
allowed, no composition rules. Refused: a common breached password or well-known phrase
(also padded with digits or symbols), one that contains the username, the email address
or the site's name, a repetition (`aaaa…`, `abcabc…`), and whatever the zxcvbn estimator
finds easy to guess (sequences, keyboard walks, dates, common words, l33t spellings).
Passwords are NFKC-normalised before they are checked or hashed, so the same text typed on
another keyboard (composed or decomposed accents, full-width letters) still matches.
"""
import asyncio
import math
import os
import re
import string
import sys
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher
from zxcvbn import zxcvbn
from zxcvbn.adjacency_graphs import ADJACENCY_GRAPHS
from zxcvbn.matching import L33T_TABLE

MIN_LENGTH = 15
MAX_LENGTH = 256
COMMON_LIST = Path(__file__).parent / "data" / "common-passwords.txt"
PASSPHRASE_LIST = Path(__file__).parent / "data" / "common-passphrases.txt"
SITE_NAME = "Gatehouse"
# zxcvbn's score 3 and above: at least 10^8 guesses, "safely unguessable" online, where
# the throttle allows a few attempts a minute. Random 16-character strings and four random
# words get there (tests/test_password_policy.py).
MIN_GUESSES = 10**8

# New hashes are argon2; bcrypt hashes imported from another system (web/imports/) are
# checked, and replaced by an argon2 hash at the first login.
hasher = PasswordHash((Argon2Hasher(), BcryptHasher()))


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
def dummy_hash() -> str:
    """What an unknown user's password is checked against, so both take as long."""
    return hasher.hash("not a password of anyone: only spends the time of a verify")


def normalise(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


async def hash_password(password: str) -> str:
    return await _off_loop(hasher.hash, normalise(password))


def _verify_forms(password: str, password_hash: str) -> tuple[bool, str | None]:
    """Hashes made before passwords were normalised hold the text as typed: that is tried
    second, and a match is rehashed in normal form."""
    normal = normalise(password)
    valid, new_hash = hasher.verify_and_update(normal, password_hash)
    if valid or normal == password:
        return valid, new_hash
    valid, _ = hasher.verify_and_update(password, password_hash)
    return valid, hasher.hash(normal) if valid else None


# What an account without a password (an invitation not yet accepted) stores: no password
# hashes to it, and verify() spends a real check's time on it, as for an unknown account.
UNUSABLE = "!"


def unusable(password_hash: str) -> bool:
    return password_hash.startswith(UNUSABLE)


async def verify(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """(valid, new hash when the stored one is outdated: older parameters or not normalised)."""
    if password_hash is None or unusable(password_hash):
        await _off_loop(_verify_forms, password, dummy_hash())
        return False, None
    return await _off_loop(_verify_forms, password, password_hash)


# ---- the policy ------------------------------------------------------------------------

COMMON = "This password is one of the most common ones and easy to guess. Choose another."
PADDED = "This password is a common one with a few characters added, and easy to guess."
PHRASE = "This is a well-known phrase and easy to guess. Choose words of your own."
REPEATS = "This password repeats a pattern (like aaaa or abcabc) and is easy to guess."
SEQUENCE = "This password is a sequence (like abcd or 1234) and is easy to guess."
KEYBOARD = "This password is a row or pattern of keys (like qwerty or 1qaz2wsx) and is easy to guess."
DATE = "This password is built on a date or a year and is easy to guess."
WORDS = "This password is built on a common word, name or password and is easy to guess."
PERSONAL = f"This password is built on your username, your email address or {SITE_NAME}'s name."
WEAK = "This password is easy to guess. A few unrelated words work well."
ESTIMATOR_MESSAGES = {"repeat": REPEATS, "sequence": SEQUENCE, "spatial": KEYBOARD, "date": DATE,
                      "regex": DATE, "dictionary": WORDS}

# Spaces and punctuation people put between words: "pass word", "pass-word" and "password"
# are one guess for an attacker.
SEPARATORS = re.compile(r"[\s\-_.,'\"’]+")
PADDING = string.digits + string.punctuation


def joined(text: str) -> str:
    return SEPARATORS.sub("", text.casefold())


def _phrases(path: Path) -> frozenset[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return frozenset(joined(line) for line in lines if line.strip() and not line.startswith("#")) - {""}


@cache
def common_passwords() -> frozenset[str]:
    return _phrases(COMMON_LIST)


@cache
def common_passphrases() -> frozenset[str]:
    return _phrases(PASSPHRASE_LIST)


def _repeats(text: str) -> bool:
    """Whether text is one part said again and again ("abcabc": then text is found in
    itself doubled, neither at 0 nor at its length), or mostly a part of 4 or more
    characters said twice ("P@ssw0rd!P@ssw0rd?", two thirds or more)."""
    if len(text) > 1 and text in (text + text)[1:-1]:
        return True
    length = len(text)
    for size in range(length // 2, max(4, -(-length // 3)) - 1, -1):
        if any(text[start:start + size] in text[start + size:] for start in range(length - 2 * size + 1)):
            return True
    return False


@cache
def _keys_around() -> dict[str, frozenset[str]]:
    """Each character's neighbours on a qwerty keyboard, itself included (zxcvbn finds
    walks on a keypad: random digits would too often pass for one here)."""
    return {key: frozenset({key, *"".join(filter(None, neighbours))})
            for key, neighbours in ADJACENCY_GRAPHS["qwerty"].items()}


def _keyboard_walk(text: str) -> bool:
    """Whether three quarters of text's steps or more go to the same or a neighbouring key:
    random text does that about one step in eight, words about one in five."""
    around = _keys_around()
    steps = list(zip(text, text[1:]))
    walked = sum(b in around.get(a, ()) for a, b in steps)
    return len(steps) >= PIECE_MIN and 4 * walked >= 3 * len(steps)


def _listed(text: str) -> str | None:
    if text in common_passwords():
        return COMMON
    if text in common_passphrases():
        return PHRASE
    return None


def _known_problem(bare: str) -> str | None:
    """bare is the password joined(): a listed password or phrase, alone or padded."""
    if message := _listed(bare):
        return message
    core = bare.strip(PADDING)
    # Padding counts when it is at most half: "dragon" amid 17 random digits is not weak.
    if core != bare and 2 * len(core) >= len(bare) and (message := _listed(core)):
        return PADDED if message == COMMON else PHRASE
    return None


def _personal_problem(bare: str, username: str, email: str) -> str | None:
    local_part = email.partition("@")[0]
    for label, value in (("your username", username), ("your email address", local_part),
                         (f"the name {SITE_NAME}", SITE_NAME)):
        value = joined(normalise(value))
        if len(value) >= 3 and value in bare:
            return f"The password must not contain {label}."
    return None


# zxcvbn's time grows with the length squared, times the number of ways it reads the l33t
# characters present ("1" as i or l, each of "([{<" as c, ...): 15 mixed symbols take a
# second. So it judges the password in pieces of at most PIECE_BUDGET units (length² ×
# readings: 28 plain characters, fewer l33t ones, never fewer than PIECE_MIN), each 5 to
# 10 ms of CPU here, piece after piece until together they need MIN_GUESSES, at most
# MAX_PIECES of them: the rest of a long password is not judged (the checks before it,
# lists, names and repetition, read the whole password).
PIECE_BUDGET = 4_000
PIECE_MAX = 28
PIECE_MIN = 8
MAX_PIECES = 3


def _l33t_readings(text: str) -> int:
    """About how many ways zxcvbn reads text's l33t characters (it enumerates up to twice
    this: a character with two letters is tried both ways)."""
    present = set(text)
    return math.prod(max(1, sum(char in present for char in chars)) for chars in L33T_TABLE.values())


def _affordable_piece(text: str) -> str:
    end = min(len(text), PIECE_MAX)
    while end > PIECE_MIN and end * end * (3 + 2 * _l33t_readings(text[:end])) > PIECE_BUDGET:
        end -= 1
    return text[:end]


# zxcvbn keeps the user inputs of the running call in a module global.
_estimating = threading.Lock()


def estimates(text: str, user_inputs: list[str]) -> list[dict]:
    """zxcvbn's results for successive pieces of text (the guesses of the whole are about
    their product)."""
    results, guesses, start = [], 1, 0
    while start < len(text) and len(results) < MAX_PIECES and guesses < MIN_GUESSES:
        piece = _affordable_piece(text[start:])
        with _estimating:
            results.append(zxcvbn(piece, user_inputs=user_inputs, max_length=len(piece)))
        guesses *= results[-1]["guesses"]
        start += len(piece)
    return results


def _estimator_problem(password: str, username: str, email: str) -> str | None:
    local_part = email.partition("@")[0]
    user_inputs = [username, email, local_part, *re.split(r"[._+-]", local_part), SITE_NAME]
    # Without separators, as an attacker tries "pass word" and "pass-word" alike.
    results = estimates(SEPARATORS.sub("", password) or password,
                        [normalise(value).casefold() for value in user_inputs if value])
    matches = [match for result in results for match in result["sequence"]]
    # zxcvbn also finds these names reversed or in l33t ("G4teh0use"), whatever the score.
    if any(match.get("dictionary_name") == "user_inputs" and len(match["token"]) >= 4 for match in matches):
        return PERSONAL
    # Sequences, keyboard walks and common passwords strung together stay guessable however
    # many guesses zxcvbn counts for them ("abcdefgh12345678zyxwvuts").
    mechanical = all(match["pattern"] in ("repeat", "sequence", "spatial")
                     or match.get("dictionary_name") == "passwords" for match in matches)
    if not mechanical and math.prod(result["guesses"] for result in results) >= MIN_GUESSES:
        return None
    found = [match for match in matches if match["pattern"] != "bruteforce"]
    if not found:
        weakest = min(results, key=lambda result: result["guesses"])
        return weakest["feedback"]["warning"] or WEAK
    main = max(found, key=lambda match: len(match["token"]))
    return ESTIMATOR_MESSAGES.get(main["pattern"], WEAK)


def problem(password: str, username: str = "", email: str = "") -> str | None:
    """Why this password is refused, in words for the person choosing it; None if fine."""
    password = normalise(password)
    length = len(password)
    if length == 0:
        return "Choose a password."
    if length < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters ({length} so far). A few unrelated words work well."
    if length > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters ({length} entered)."
    bare = joined(password)
    if message := _known_problem(bare) or _personal_problem(bare, username, email):
        return message
    if _repeats(bare or password):
        return REPEATS
    if _keyboard_walk(bare):
        return KEYBOARD
    return _estimator_problem(password, username, email)
