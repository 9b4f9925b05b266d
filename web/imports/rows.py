"""A CSV row as a new account: the file's columns mapped to fields, and every problem that
would stop the row from becoming an account, found before anything is written."""
import asyncio
import re
from dataclasses import dataclass

from sqlalchemy import func, select

from ..accounts.validation import EMAIL_TAKEN, normalise_email, username_problem
from ..core.tables import ROLES, users
from .csvfile import MAX_CELL

FIELDS = ("username", "email", "role", "active", "password_hash")
LABELS = {"username": "Username", "email": "Email", "role": "Role", "active": "Active",
          "password_hash": "Password hash"}
REQUIRED = ("username", "email")
# Header names each field is recognised by (compared lowercased, without spaces, - and _).
KNOWN_HEADERS = {
    "username": {"username", "user", "login", "name", "loginname"},
    "email": {"email", "mail", "emailaddress"},
    "role": {"role", "group"},
    "active": {"active", "enabled", "isactive", "status"},
    "password_hash": {"passwordhash", "hash", "password"},
}
YES = {"", "1", "yes", "y", "true", "active", "enabled"}
NO = {"0", "no", "n", "false", "inactive", "disabled"}
# Hashes another system may have made, checked at the first login and then replaced by an
# argon2 hash (passwords.verify): argon2 (any variant) and bcrypt.
HASH = re.compile(r"\$argon2(id|i|d)\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+"
                  r"|\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
NAME_EXISTS = "An account with this username already exists."
CHUNK = 500  # values per IN (...) when looking for existing accounts


def _plain(header: str) -> str:
    return re.sub(r"[\s_\-]", "", header.lower())


def guess_mapping(header: list[str]) -> dict[str, int]:
    """Each field mapped to the first column whose name is one of the field's known names."""
    mapping = {}
    for index, name in enumerate(header):
        for field, names in KNOWN_HEADERS.items():
            if field not in mapping and _plain(name) in names:
                mapping[field] = index
    return mapping


def mapped(cells: list[str], mapping: dict[str, int]) -> dict[str, str]:
    """The row's value of each field (stripped; "" when unmapped or missing)."""
    return {field: (cells[mapping[field]].strip() if field in mapping and mapping[field] < len(cells) else "")
            for field in FIELDS}


def active_value(text: str) -> bool | None:
    low = text.strip().lower()
    return True if low in YES else False if low in NO else None


def role_value(text: str) -> str | None:
    """The role a cell names (any case); an empty cell is a Customer."""
    if not text.strip():
        return "Customer"
    return next((role for role in ROLES if role.lower() == text.strip().lower()), None)


@dataclass(frozen=True)
class Account:
    """A row's values as the account they make."""
    username: str
    email: str
    role: str
    active: bool
    password_hash: str


def account_of(values: dict[str, str]) -> Account:
    """The account of a row without problems."""
    return Account(values["username"], normalise_email(values["email"])[0], role_value(values["role"]),
                   active_value(values["active"]), values["password_hash"])


def field_problems(values: dict[str, str], importer_role: str) -> dict[str, str]:
    """What is wrong with each field on its own."""
    return _checked(values, importer_role)[0]


def _checked(values: dict[str, str], importer_role: str) -> tuple[dict[str, str], str]:
    """(what is wrong with each field on its own, the address normalised and lowercased)."""
    problems, address = {}, ""
    for field in FIELDS:
        if len(values[field]) > MAX_CELL:
            problems[field] = f"Longer than {MAX_CELL} characters."
    if "username" not in problems and (message := username_problem(values["username"])):
        problems["username"] = message
    if "email" not in problems:
        normalised, message = normalise_email(values["email"])
        if message:
            problems["email"] = message
        else:
            address = normalised.lower()
    role = role_value(values["role"])
    if role is None:
        problems["role"] = f"Unknown role: use {', '.join(ROLES)} (or leave it empty for Customer)."
    elif importer_role != "Admin" and role != "Customer":
        problems["role"] = "Managers may import Customers only."
    if active_value(values["active"]) is None:
        problems["active"] = "Use yes or no (or 1 or 0)."
    if values["password_hash"] and not HASH.fullmatch(values["password_hash"]):
        problems["password_hash"] = "Not an argon2 or bcrypt hash. Leave it empty to send an invitation."
    return problems, address


async def existing(conn, column, values: set[str]) -> set[str]:
    """Which of `values` (lowercased) an account already has in `column`, deleted ones too
    (their names stay taken until purged)."""
    found, ordered = set(), sorted(values)
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start:start + CHUNK]
        found.update((await conn.execute(select(func.lower(column)).where(func.lower(column).in_(chunk)))).scalars())
    return found


def in_file_problems(rows: list[tuple[int, dict[str, str]]], importer_role: str):
    """Every row's problems that the file alone shows (its fields, a name or address used on an
    earlier line), with each row's name and address as an account would have them. Pure CPU
    (the address validator, about 0.1 ms a row): run in a thread, off the event loop."""
    names, addresses, keys, result = {}, {}, {}, {}
    for line, values in rows:
        problems, address = _checked(values, importer_role)
        name = values["username"].lower()
        keys[line] = (name, address)
        if "username" not in problems:
            if name in names:
                problems["username"] = f"Also on line {names[name]} of the file."
            else:
                names[name] = line
        if "email" not in problems:
            if address in addresses:
                problems["email"] = f"Also on line {addresses[address]} of the file."
            else:
                addresses[address] = line
        result[line] = problems
    return result, keys


async def problems_of(conn, rows: list[tuple[int, dict[str, str]]], importer_role: str) -> dict[int, dict]:
    """Every row's problems, by line: its fields, a name or address used on an earlier line of
    the file, or one an account already has. A row that is fine has {}."""
    result, keys = await asyncio.to_thread(in_file_problems, rows, importer_role)
    taken_names = await existing(conn, users.c.username, {name for name, _ in keys.values() if name})
    taken_addresses = await existing(conn, users.c.email, {address for _, address in keys.values() if address})
    for line, problems in result.items():
        name, address = keys[line]
        if "username" not in problems and name in taken_names:
            problems["username"] = NAME_EXISTS
        if "email" not in problems and address in taken_addresses:
            problems["email"] = EMAIL_TAKEN
    return result
