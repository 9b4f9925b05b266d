"""Recovery codes: ten single-use codes of 80 random bits each, for a lost phone.

Only an HMAC-SHA-256 of each is stored (factor_crypto.py): a code has too many bits to guess
offline, so a slow hash like argon2 would only make each login with one cost ten slow checks.
"""
import secrets

COUNT = 10
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off paper without doubt
LENGTH = 16  # 31**16 > 2**79


def generate() -> list[str]:
    return [format_code("".join(secrets.choice(ALPHABET) for _ in range(LENGTH))) for _ in range(COUNT)]


def format_code(raw: str) -> str:
    return "-".join(raw[i:i + 4] for i in range(0, len(raw), 4))


def normalise(typed: str) -> str | None:
    """A typed code as generated (any case, spaces or dashes anywhere); None when it cannot be one."""
    raw = "".join(ch for ch in typed.lower() if ch not in " -")
    if len(raw) != LENGTH or any(ch not in ALPHABET for ch in raw):
        return None
    return format_code(raw)


def looks_like_totp(typed: str) -> bool:
    digits = typed.replace(" ", "")
    return len(digits) == 6 and digits.isascii() and digits.isdigit()
