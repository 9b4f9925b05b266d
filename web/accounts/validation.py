"""Checks on account fields, shared by registration, the profile, the admin table and the CLI.

Each returns a message for the person at the form, or None when the value is fine.
"""
import re

from email_validator import EmailNotValidError, validate_email

from ..core.tables import EMAIL_MAX, USERNAME_MAX
from . import passwords, queries

USERNAME_MIN = 3
USERNAME_TAKEN = "This username is taken. Choose another."
EMAIL_TAKEN = "An account with this email address already exists."
USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def username_problem(username: str) -> str | None:
    if not username:
        return "Choose a username."
    if len(username) < USERNAME_MIN or len(username) > USERNAME_MAX:
        return f"Use {USERNAME_MIN} to {USERNAME_MAX} characters."
    if not USERNAME_RE.fullmatch(username):
        return "Use letters, digits, dots, dashes and underscores, starting with a letter or digit."
    return None


def normalise_email(email: str) -> tuple[str | None, str | None]:
    """(normalised address, None) or (None, why it is refused)."""
    if not email:
        return None, "Enter an email address."
    if len(email) > EMAIL_MAX:
        return None, f"Use at most {EMAIL_MAX} characters."
    try:
        valid = validate_email(email, check_deliverability=False)
    except EmailNotValidError as error:
        return None, str(error)
    return valid.normalized, None


async def account_problems(conn, username: str, email: str, password: str | None,
                           current=None) -> dict[str, str]:
    """Every field's problem for a new account, or for the account `current` changed; empty
    when all is well. A value `current` already has is not checked again: it is its own, not
    taken, and may predate today's rules (an edit of the role must not fail on the email)."""
    problems = {}
    except_id = current.id if current is not None else None
    if not _unchanged(username, current, "username"):
        if message := username_problem(username):
            problems["username"] = message
        elif await queries.username_taken(conn, username, except_id):
            problems["username"] = USERNAME_TAKEN
    if not _unchanged(email, current, "email"):
        normalised, message = normalise_email(email)
        if message:
            problems["email"] = message
        elif await queries.email_taken(conn, normalised, except_id):
            problems["email"] = EMAIL_TAKEN
    if password is not None and (message := passwords.problem(password, username, email)):
        problems["password"] = message
    return problems


def _unchanged(value: str, current, field: str) -> bool:
    return current is not None and value == getattr(current, field)
