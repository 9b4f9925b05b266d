"""The users table's queries: filters, sorting and keyset pagination (see keyset.py).

Each sort has an index that ends in the same columns (see tables.py).
"""
from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import urlencode

from cachetools import LRUCache
from sqlalchemy import (
    DateTime, Integer, String, and_, bindparam, case, cast, false, func, literal, not_, or_, select, true, tuple_,
    union,
)
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import UnaryExpression

from ..accounts.factors import HAS_FACTOR
from ..accounts.tokens import INVITE
from ..core import keyset
from ..core.recent import Recent
from ..core.db import utcnow
from ..core.tables import (
    NEVER, ROLES, account_tokens, audit_events, login_throttle, passkeys, totp_factors, users, users_search,
)

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


def starting_with(q: str, tested=None):
    """A prefix of the username or of the email, as an index range on lower(column)."""
    tested = tested or _as_is
    low, high = q.lower(), q.lower() + "\U0010ffff"
    username, email = tested(func.lower(users.c.username)), tested(func.lower(users.c.email))
    return or_(and_(username >= low, username < high), and_(email >= low, email < high))


def full_text(q: str, dialect: str, walk: bool) -> bool:
    """Whether a search reads SQLite's FTS5 index (joined by `source`) rather than testing each
    row with LIKE: never on PostgreSQL (its trigram indexes serve LIKE); on SQLite unless the
    page walks its sort's index (`walk`) with an ASCII term, for which LIKE finds the same rows."""
    return dialect == "sqlite" and len(q) >= SUBSTRING_MIN and not (walk and q.isascii())


def containing(q: str, dialect: str, walk: bool = False):
    """Any part of the username or of the email, any case, found by a trigram index
    (tables.py). What the user typed is only ever text to find: one quoted FTS5 string on
    SQLite, whatever quotes, AND, NEAR, * or : it holds; in LIKE % _ and \\ escaped."""
    if full_text(q, dialect, walk):
        return users_search.c.users_search.match('"' + q.replace('"', '""') + '"')
    pattern = func.lower("%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    return or_(func.lower(users.c.username).like(pattern, escape="\\"),
               func.lower(users.c.email).like(pattern, escape="\\"))


def source(view: TableState, dialect: str, walk: bool = False):
    """What a view's rows are read from: the users, on SQLite joined to the FTS5 matches of its
    search. A join, not `id IN (matches)`: it reads the matches as it goes, so a capped count
    stops early, where IN reads every match first (1.5 s for a term in each of a million
    users, docs/PERFORMANCE.md)."""
    if view.q and full_text(view.q, dialect, walk):
        return users.join(users_search, users_search.c.rowid == users.c.id)
    return users


def filters(view: TableState, dialect: str, walk: bool = False, live=users.c.deleted_at.is_(None)) -> list:
    """The view's conditions on the rows of `source(view, dialect, walk)`, `live` first (None:
    deleted users too). When the page walks its sort's index (`walk`, SQLite), they are tests
    of each row: SQLite's unary + keeps an index from serving a term, so only the sort's index
    is left to read the rows in order."""
    tested = _per_row if walk else _as_is
    conditions = [] if live is None else [live]
    if view.q:
        conditions.append(starting_with(view.q, tested) if len(view.q) < SUBSTRING_MIN
                          else containing(view.q, dialect, walk))
    if view.role:
        conditions.append(tested(users.c.role) == view.role)
    if view.active == "locked":
        conditions.append(tested(users.c.id).in_(locked_accounts()))
    elif view.active == "invited":
        conditions.append(tested(users.c.invited_at).is_not(None))
    elif view.active == "expired":
        conditions.extend((tested(users.c.invited_at).is_not(None), not_(invitation_valid())))
    elif view.active == "1":
        conditions.extend((tested(users.c.active).is_(true()), tested(users.c.invited_at).is_(None)))
    elif view.active == "0":
        conditions.append(tested(users.c.active).is_(false()))
    if view.factor == "1":
        conditions.append(tested(users.c.id).in_(with_factor()))
    elif view.factor == "0":
        conditions.append(tested(users.c.id).not_in(with_factor()))
    return conditions


def _as_is(column):
    return column


def _per_row(column):
    return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)


# The time a statement compares with, taken when it runs (not when it is built): the page's
# statements are kept and run again (load_page).
NOW = bindparam("now", type_=DateTime, callable_=lambda: utcnow())


def _keyset(key, unique: bool, cursor, greater: bool):
    """Rows whose (key, id) comes after the cursor's in ascending (`greater`) or descending order."""
    value, row_id = cursor
    if unique:
        return key > value if greater else key < value
    key = tuple_(key, users.c.id)
    return key > tuple_(value, row_id) if greater else key < tuple_(value, row_id)


# The login throttle's key of each account (accounts/attempts.py): a row locked now is an
# account locked out by failed logins.
ACCOUNT_PREFIX = "account:"
ACCOUNT_KEY = literal(ACCOUNT_PREFIX, String) + cast(users.c.id, String)


def locked_accounts():
    """The ids of the accounts locked now, read from the throttle's few rows: testing each
    user's key visits every user to find them."""
    return select(cast(func.substr(login_throttle.c.key, len(ACCOUNT_PREFIX) + 1), Integer)).where(
        login_throttle.c.key.startswith(ACCOUNT_PREFIX), login_throttle.c.locked_until > NOW)


def with_factor():
    """The ids of the accounts HAS_FACTOR holds for, read from the factors' own few rows."""
    return union(select(totp_factors.c.user_id).where(totp_factors.c.confirmed_at.is_not(None)),
                 select(passkeys.c.user_id))


def locked_until():
    return (select(login_throttle.c.locked_until)
            .where(login_throttle.c.key == ACCOUNT_KEY, login_throttle.c.locked_until > NOW)
            .scalar_subquery().label("locked_until"))


def invitation_valid():
    """Whether the account's invitation link still works (tokens.py's rule for INVITE: not
    expired, sent to the address the account has). Looked up only for invited accounts, by
    the tokens' (user_id, purpose) index."""
    return select(account_tokens.c.id).where(
        account_tokens.c.user_id == users.c.id, account_tokens.c.purpose == INVITE,
        account_tokens.c.expires_at > NOW,
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


# Counting is a pass over an index, where the page itself is 51 index steps; the count
# changes only with a write, so it is reused (recent.py). It stops at COUNT_LIMIT: past it the
# table says "10,000+" rather than read every matching row for a number nobody pages through
# (the whole table's count read a million entries: 15 ms on SQLite, 100 ms on PostgreSQL).
COUNT_SECONDS = 5
COUNT_LIMIT = 10_000
DELETED_LIMIT = 1_000  # more deleted matches than this: counted the plain way
_counts = Recent(COUNT_SECONDS, size=256)


async def count_matching(conn, view: TableState) -> int:
    """The number of users the view matches; COUNT_LIMIT + 1 stands for "more than COUNT_LIMIT"."""
    key = (conn.engine, view.q.lower(), view.role, view.active, view.factor)
    return await _counts.get(key, lambda: _count(conn, view))


async def _count(conn, view: TableState) -> int:
    """The matches among every user, deleted or not, minus the deleted ones that match: the
    first is read from an index alone when the filter's index holds all it tests (a role, a
    status), where testing deleted_at visits every matching row (10,000 of them at random in a
    million: 160 ms on PostgreSQL); the few deleted users are found by their partial index. A
    search reads its matches' rows either way, and is counted as it reads."""
    dialect = conn.dialect.name
    matching = source(view, dialect)
    if view.q:
        return await _capped(conn, matching, filters(view, dialect), COUNT_LIMIT + 1)
    # SQLite: the deleted users' partial index, with every other term a test of each row
    per_row = dialect == "sqlite"
    deleted = await _capped(conn, users, filters(view, dialect, per_row, live=users.c.deleted_at.is_not(None)),
                            DELETED_LIMIT + 1)
    if deleted > DELETED_LIMIT:
        return await _capped(conn, matching, filters(view, dialect), COUNT_LIMIT + 1)
    return max(0, await _capped(conn, matching, filters(view, dialect, live=None), COUNT_LIMIT + 1 + deleted) - deleted)


async def _capped(conn, rows, conditions: list, limit: int) -> int:
    matching = select(users.c.id).select_from(rows).where(*conditions).limit(limit).subquery()
    return (await conn.execute(select(func.count()).select_from(matching))).scalar_one()


# SQLite has no statistics to plan a page by (no ANALYZE): it walks the sort's index when it
# can, else reads what the filter's index finds and sorts it, whatever either costs. The
# capped count tells: a page that gathers WALK_FROM matches or fewer reads them by the filter's
# index (or the FTS5 index) and sorts them; past that, walking the sort's index and testing each
# row finds 51 sooner (after about 51 / share rows). Unary + keeps the other index out of the
# plan (docs/PERFORMANCE.md, "A million users"). PostgreSQL plans from its statistics.
WALK_FROM = 5_000


def plan(view: TableState, dialect: str, total: int) -> str:
    """"walk", "gather", or "" to leave it to the database."""
    if dialect != "sqlite":
        return ""
    return "gather" if view.filtered and total <= WALK_FROM else "walk"


# A page's statement, kept for its view's shape (filters, sort, direction, plan, size) with the
# cursor as parameters: building one and working out its cache key cost more than running it
# (0.4 ms a request, bench/stages.py); a kept statement's cache key is worked out once.
_pages = LRUCache(maxsize=256)


def page_statement(view: TableState, dialect: str, how: str, forward: bool, from_cursor: bool):
    shape = (dialect, view.q, view.role, view.active, view.factor, view.sort, view.size, how, forward,
             from_cursor)
    if (query := _pages.get(shape)) is None:
        query = _pages[shape] = _page_query(view, dialect, how, forward, from_cursor)
    return query


def _page_query(view: TableState, dialect: str, how: str, forward: bool, from_cursor: bool):
    sort = SORTS[view.sort]
    walk, key = how == "walk", _per_row(sort.key) if how == "gather" else sort.key
    conditions = filters(view, dialect, walk)
    if from_cursor:
        cursor = (bindparam("cursor_key", type_=key.type), bindparam("cursor_id", type_=Integer))
        conditions.append(_keyset(key, sort.unique, cursor, forward))
    order = [key.asc() if forward else key.desc()]
    if not sort.unique:
        order.append(users.c.id.asc() if forward else users.c.id.desc())
    return (select(*LIST_COLUMNS, locked_until(), invitation(), has_factor()).select_from(source(view, dialect, walk))
            .where(*conditions).order_by(*order).limit(view.size + 1))


async def load_page(conn, view: TableState) -> keyset.Page:
    sort = SORTS[view.sort]
    dialect = conn.dialect.name
    total = await count_matching(conn, view)
    backwards = bool(view.before)
    cursor = decode_cursor(sort, view.before or view.after) if (view.before or view.after) else None
    # Rows are read in the direction of travel: backwards from a `before` cursor.
    forward = (view.dir == "asc") != backwards
    query = page_statement(view, dialect, plan(view, dialect, total), forward, cursor is not None)
    parameters = {"cursor_key": cursor[0], "cursor_id": cursor[1]} if cursor else {}
    page = keyset.page_of((await conn.execute(query, parameters)).all(), view.size, view, backwards,
                          cursor is not None, lambda row: encode_cursor(sort, row))
    page.total, page.at_least = min(total, COUNT_LIMIT), total > COUNT_LIMIT
    return page


# Built once (its times are NOW, bound when it runs): building it and working out its cache
# key for each saved row cost more than reading the row.
ROW = select(*LIST_COLUMNS, locked_until(), invitation(), has_factor()).where(
    users.c.id == bindparam("user_id"), users.c.deleted_at.is_(None))


async def load_row(conn, user_id: int):
    """One live user as a row of the table shows them (with their lock-out and invitation)."""
    return (await conn.execute(ROW, {"user_id": user_id})).first()


async def matching_ids(conn, view: TableState, after: int, limit: int) -> list[int]:
    """The next `limit` ids, above `after`, of the users the view's filters match (its sort and
    page play no part): a bulk action over a whole filter walks them batch by batch."""
    dialect = conn.dialect.name
    query = (select(users.c.id).select_from(source(view, dialect)).where(*filters(view, dialect), users.c.id > after)
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
    view, dialect = TableState(q=q), conn.dialect.name
    query = (select(users.c.id, users.c.username, users.c.email).select_from(source(view, dialect))
             .where(*filters(view, dialect))
             .order_by(SORTS["username"].key).limit(limit))
    return (await conn.execute(query)).all()
