"""The users table's queries: filters, sorting and keyset pagination (see keyset.py).

Each sort has an index that ends in the same columns (see tables.py).
"""
from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import urlencode

from sqlalchemy import String, and_, case, cast, false, func, literal, not_, or_, select, true, tuple_

from ..accounts.factors import HAS_FACTOR
from ..accounts.tokens import INVITE
from ..core import keyset
from ..core.recent import Recent
from ..core.db import utcnow
from ..core.tables import NEVER, ROLES, account_tokens, audit_events, login_throttle, users, users_search

PAGE_SIZE = 50
PAGE_SIZES = (25, 50, 100)
# active (invitations accepted), inactive, locked out by failed logins, invited (not accepted
# yet, whether the link still works or not), invitation expired
STATUSES = {"1", "0", "locked", "invited", "expired"}
NEVER_VALUE = datetime(1970, 1, 1)


@dataclass(frozen=True)
class Sort:
    key: object          # the SQL expression rows are ordered by
    unique: bool         # True when the key alone orders rows (then id is not needed)
    value: object        # row -> the key's value for a cursor
    parse: object = str  # cursor text -> the key's value


SORTS = {
    "username": Sort(func.lower(users.c.username), True, lambda r: r.username.lower()),
    "email": Sort(func.lower(users.c.email), True, lambda r: r.email.lower()),
    "role": Sort(users.c.role, False, lambda r: r.role),
    "active": Sort(users.c.active, False, lambda r: r.active, bool),
    "last_login": Sort(func.coalesce(users.c.last_login_at, NEVER), False,
                       lambda r: (r.last_login_at or NEVER_VALUE).isoformat(), datetime.fromisoformat),
    "created": Sort(users.c.created_at, False, lambda r: r.created_at.isoformat(), datetime.fromisoformat),
}
COLUMNS = (("username", "Username"), ("email", "Email"), ("role", "Role"), ("active", "Active"),
           ("last_login", "Last login"), ("created", "Created"))


@dataclass(frozen=True)
class TableState:
    """What the users table shows: every field is in the URL, so a link restores it exactly."""
    q: str = ""
    role: str = ""
    active: str = ""
    factor: str = ""  # "1": with a second factor, "0": without
    sort: str = "username"
    dir: str = "asc"
    after: str = ""
    before: str = ""
    page: int = 1
    size: int = PAGE_SIZE

    @classmethod
    def from_args(cls, args) -> "TableState":
        return cls(
            q=args.get("q", "").strip()[:254],
            role=keyset.one_of(args, "role", ROLES),
            active=keyset.one_of(args, "active", STATUSES),
            factor=keyset.one_of(args, "factor", ("1", "0")),
            sort=keyset.one_of(args, "sort", SORTS, "username"),
            dir=keyset.one_of(args, "dir", ("asc", "desc"), "asc"),
            **keyset.position(args, 500),
            size=int(keyset.one_of(args, "size", {str(n) for n in PAGE_SIZES}, str(PAGE_SIZE))),
        )

    def query_string(self, **changes) -> str:
        """"?q=…&sort=…" (or "") for links to other pages that keep this table's state."""
        view = replace(self, **changes) if changes else self
        params = {k: v for k, v in vars(view).items() if v and not (k, v) in
                  {("sort", "username"), ("dir", "asc"), ("page", 1), ("size", PAGE_SIZE)}}
        return "?" + urlencode(params) if params else ""

    def url(self, **changes) -> str:
        return "/users" + self.query_string(**changes)

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.role or self.active or self.factor)

    def sorted_by(self, column: str) -> str:
        """The link of a column header: sort by it, or flip the direction if it is the sort."""
        flip = "desc" if self.sort == column and self.dir == "asc" else "asc"
        return self.url(sort=column, dir=flip, after="", before="", page=1)


def encode_cursor(sort: Sort, row) -> str:
    return keyset.encode_cursor(sort.value(row), row.id)


def decode_cursor(sort: Sort, token: str):
    cursor = keyset.decode_cursor(token, sort.parse)
    return cursor if cursor is None or cursor[1] < 2**31 else None  # users.id is a 32-bit INTEGER


# Trigrams need three characters: a shorter search finds the start of a username or email.
SUBSTRING_MIN = 3


def starting_with(q: str):
    """A prefix of the username or of the email, as an index range on lower(column)."""
    low = q.lower()
    high = low + "\U0010ffff"
    return or_(
        and_(func.lower(users.c.username) >= low, func.lower(users.c.username) < high),
        and_(func.lower(users.c.email) >= low, func.lower(users.c.email) < high),
    )


def containing(q: str, dialect: str):
    """Any part of the username or of the email, any case, found by a trigram index
    (tables.py). What the user typed is only ever text to find: one quoted FTS5 string on
    SQLite, whatever quotes, AND, NEAR, * or : it holds; on PostgreSQL % _ and \\ escaped."""
    if dialect == "sqlite":
        phrase = '"' + q.replace('"', '""') + '"'
        return users.c.id.in_(select(users_search.c.rowid).where(users_search.c.users_search.match(phrase)))
    pattern = func.lower("%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    return or_(func.lower(users.c.username).like(pattern, escape="\\"),
               func.lower(users.c.email).like(pattern, escape="\\"))


def filters(view: TableState, dialect: str) -> list:
    conditions = [users.c.deleted_at.is_(None)]
    if view.q:
        conditions.append(starting_with(view.q) if len(view.q) < SUBSTRING_MIN else containing(view.q, dialect))
    if view.role:
        conditions.append(users.c.role == view.role)
    if view.active == "locked":
        conditions.append(select(login_throttle.c.key).where(
            login_throttle.c.key == ACCOUNT_KEY, login_throttle.c.locked_until > utcnow()).exists())
    elif view.active == "invited":
        conditions.append(users.c.invited_at.is_not(None))
    elif view.active == "expired":
        conditions.extend((users.c.invited_at.is_not(None), not_(invitation_valid())))
    elif view.active == "1":
        conditions.extend((users.c.active.is_(true()), users.c.invited_at.is_(None)))
    elif view.active == "0":
        conditions.append(users.c.active.is_(false()))
    if view.factor:
        conditions.append(HAS_FACTOR(users.c.id) if view.factor == "1" else not_(HAS_FACTOR(users.c.id)))
    return conditions


def _keyset(sort: Sort, cursor, greater: bool):
    """Rows whose (key, id) comes after the cursor's in ascending (`greater`) or descending order."""
    value, row_id = cursor
    if sort.unique:
        return sort.key > value if greater else sort.key < value
    key = tuple_(sort.key, users.c.id)
    return key > tuple_(value, row_id) if greater else key < tuple_(value, row_id)


# The login throttle's key of each account (accounts/attempts.py): a row locked now is an
# account locked out by failed logins.
ACCOUNT_KEY = literal("account:", String) + cast(users.c.id, String)


def locked_until():
    return (select(login_throttle.c.locked_until)
            .where(login_throttle.c.key == ACCOUNT_KEY, login_throttle.c.locked_until > utcnow())
            .scalar_subquery().label("locked_until"))


def invitation_valid():
    """Whether the account's invitation link still works (tokens.py's rule for INVITE: not
    expired, sent to the address the account has). Looked up only for invited accounts, by
    the tokens' (user_id, purpose) index."""
    return select(account_tokens.c.id).where(
        account_tokens.c.user_id == users.c.id, account_tokens.c.purpose == INVITE,
        account_tokens.c.expires_at > utcnow(),
        func.lower(account_tokens.c.email) == func.lower(users.c.email)).exists()


def invitation():
    """"invited" while the account's invitation can be accepted, "expired" once its link has
    run out or is gone, None for an account that is not waiting on one."""
    return case((users.c.invited_at.is_(None), None), (invitation_valid(), "invited"),
                else_="expired").label("invitation")


def has_factor():
    return HAS_FACTOR(users.c.id).label("has_factor")


LIST_COLUMNS = (users.c.id, users.c.username, users.c.email, users.c.role, users.c.active,
                users.c.version, users.c.last_login_at, users.c.created_at)


# Counting is a pass over an index (100,000 entries for the whole table), where the page
# itself is 51 index steps; the count changes only with a write, so it is reused (recent.py).
# A filter's count stops at COUNT_LIMIT: past it the table says "10,000+" rather than read
# every matching row for a number nobody pages through.
COUNT_SECONDS = 5
COUNT_LIMIT = 10_000
_counts = Recent(COUNT_SECONDS, size=256)


async def count_matching(conn, view: TableState) -> int:
    """The number of users the view matches; COUNT_LIMIT + 1 stands for "more than COUNT_LIMIT"."""
    key = (conn.engine, view.q.lower(), view.role, view.active, view.factor)
    return await _counts.get(key, lambda: _count(conn, view))


async def _count(conn, view: TableState) -> int:
    if not view.filtered:
        # Every live user: all rows (counted from an index) minus the soft-deleted ones (a
        # partial index holds just those), instead of a pass over the whole table.
        deleted = select(func.count()).select_from(users).where(users.c.deleted_at.is_not(None))
        everyone = select(func.count()).select_from(users)
        return (await conn.execute(select(everyone.scalar_subquery() - deleted.scalar_subquery()))).scalar_one()
    matching = select(users.c.id).where(*filters(view, conn.dialect.name)).limit(COUNT_LIMIT + 1).subquery()
    return (await conn.execute(select(func.count()).select_from(matching))).scalar_one()


async def load_page(conn, view: TableState) -> keyset.Page:
    sort = SORTS[view.sort]
    backwards = bool(view.before)
    cursor = decode_cursor(sort, view.before or view.after) if (view.before or view.after) else None
    # Rows are read in the direction of travel: backwards from a `before` cursor.
    forward = (view.dir == "asc") != backwards
    conditions = filters(view, conn.dialect.name)
    if cursor:
        conditions.append(_keyset(sort, cursor, forward))
    order = [sort.key.asc() if forward else sort.key.desc()]
    if not sort.unique:
        order.append(users.c.id.asc() if forward else users.c.id.desc())
    query = select(*LIST_COLUMNS, locked_until(), invitation(), has_factor()).where(*conditions).order_by(*order).limit(view.size + 1)
    page = keyset.page_of((await conn.execute(query)).all(), view.size, view, backwards,
                          cursor is not None, lambda row: encode_cursor(sort, row))
    total = await count_matching(conn, view)
    page.total, page.at_least = min(total, COUNT_LIMIT), total > COUNT_LIMIT
    return page


async def load_row(conn, user_id: int):
    """One live user as a row of the table shows them (with their lock-out and invitation)."""
    query = select(*LIST_COLUMNS, locked_until(), invitation(), has_factor()).where(
        users.c.id == user_id, users.c.deleted_at.is_(None))
    return (await conn.execute(query)).first()


async def matching_ids(conn, view: TableState, after: int, limit: int) -> list[int]:
    """The next `limit` ids, above `after`, of the users the view's filters match (its sort and
    page play no part): a bulk action over a whole filter walks them batch by batch."""
    query = (select(users.c.id).where(*filters(view, conn.dialect.name), users.c.id > after)
             .order_by(users.c.id).limit(limit))
    return list((await conn.execute(query)).scalars())


async def recent_history(conn, user_id: int, limit: int):
    """The audit events about this user, newest first (the target index)."""
    query = (select(audit_events).where(audit_events.c.target_type == "user", audit_events.c.target_id == user_id)
             .order_by(audit_events.c.occurred_at.desc(), audit_events.c.id.desc()).limit(limit))
    return (await conn.execute(query)).all()


SUGGESTIONS = 8  # what the command palette lists while a name is typed


async def find_users(conn, q: str, limit: int):
    """The first live users, by username, whose username or email has `q` in it: the table's
    own search (filters), as its first page sorted by username reads it."""
    query = (select(users.c.id, users.c.username, users.c.email)
             .where(*filters(TableState(q=q), conn.dialect.name))
             .order_by(SORTS["username"].key).limit(limit))
    return (await conn.execute(query)).all()
