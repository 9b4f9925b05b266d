"""The audit log's queries: combinable filters, newest first, keyset pagination.

Rows are ordered by (occurred_at, id) descending; every filter has an index that starts
with its column and continues with occurred_at (see tables.py).
"""
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import func, select, tuple_, union_all

from ..core import keyset
from ..core.tables import audit_events, users

PAGE_SIZE = 50
ACTIONS = ("create", "update", "delete", "restore", "register", "login", "login_failed", "logout",
           "import_started", "import",
           "password_change", "password_failed", "session_end", "unlock", "refused", "export", "prune", "purge",
           "mail_failed", "password_reset_requested", "password_reset",
           "invite_resent", "invite_revoked", "invite_accepted",
           "email_confirmed", "email_change_requested", "email_change_cancelled", "email_change_reported",
           "preferences", "reauthenticate", "reauthenticate_failed",
           "passkey_add", "passkey_rename", "passkey_remove",
           "second_factor_added", "second_factor_removed", "second_factor_failed", "recovery_codes_replaced",
           "second_factors_reset", "factors_rekeyed")
CHANGES = ("create", "update", "delete", "restore")
TARGET_TYPES = ("user", "audit", "mail", "import")


def parse_when(text: str) -> datetime | None:
    """A date or date-and-time from a form or link, as naive UTC (a zone, if given, is
    applied); None when it is not one."""
    try:
        moment = datetime.fromisoformat(text) if text else None
        if moment is not None and moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):  # OverflowError: a zone that moves it past year 1 or 9999
        return None
    return moment


def moment_arg(args, name: str) -> str:
    """The link's date or date-and-time `name` as typed (up to seconds), or "" when it is not one."""
    text = args.get(name, "")[:19]
    return text if parse_when(text) else ""


def is_bare_date(text: str) -> bool:
    """A date without a time ("20240303T1200" has no colon, and is noon)."""
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def first_moment_after(until: str) -> datetime | None:
    """Where an `until` filter ends: a bare date means the whole of that day. None when nothing
    comes later (the end of 9999-12-31, the last day a datetime holds)."""
    moment = parse_when(until)
    if moment is None or not is_bare_date(until):
        return moment
    try:
        return moment + timedelta(days=1)
    except OverflowError:
        return None


@dataclass(frozen=True)
class AuditFilter:
    """What the log shows; every field is in the URL."""
    actor: str = ""
    action: tuple[str, ...] = ()
    target_type: str = ""
    target_id: str = ""
    target: str = ""  # a target user's username, as the filter form's user picker sends it
    since: str = ""
    until: str = ""
    after: str = ""
    before: str = ""
    page: int = 1

    @classmethod
    def from_args(cls, args) -> "AuditFilter":
        # Each known action once, however often repeated: a view merges one query per action.
        actions = tuple(dict.fromkeys(a for a in args.getlist("action") if a in ACTIONS))
        target_id = args.get("target_id", "").strip()
        target = args.get("target", "").strip()[:32]
        # The form's picker holds a username, or "#id" for a target without one (a purged
        # user, an import): it replaces the link's target_id, which the form does not send.
        if "target" in args:
            target_id, target = (target[1:], "") if target.startswith("#") else ("", target)
        return cls(
            actor=args.get("actor", "").strip()[:32],
            action=actions,
            target_type="user" if target else keyset.one_of(args, "target_type", TARGET_TYPES),
            target_id=target_id if target_id.isascii() and target_id.isdigit() and len(target_id) < 10 else "",
            target=target,
            since=moment_arg(args, "since"),
            until=moment_arg(args, "until"),
            **keyset.position(args, 200),
        )

    def params(self, **changes) -> list[tuple[str, str]]:
        view = replace(self, **changes)
        pairs = []
        for key, value in vars(view).items():
            if key == "action":
                pairs.extend(("action", a) for a in value)
            elif value and (key, value) != ("page", 1):
                pairs.append((key, str(value)))
        return pairs

    def url(self, path: str = "/audit", **changes) -> str:
        query = urlencode(self.params(**changes))
        return path + ("?" + query if query else "")

    def export_url(self) -> str:
        return self.url("/audit.csv", after="", before="", page=1)

    @property
    def filtered(self) -> bool:
        return bool(self.actor or self.action or self.target_type or self.target_id or self.target
                    or self.since or self.until)


async def user_id_named(conn, username: str) -> int | None:
    """The id of the user (deleted or not) with this username, in any case: the user filters
    follow the person through renames, where their events keep the name they had then."""
    return (await conn.execute(select(users.c.id).where(func.lower(users.c.username) == username.lower()))).scalar()


async def conditions(conn, view: AuditFilter) -> list | None:
    """The WHERE clauses of a view; None when it can match nothing (an unknown actor)."""
    where = []
    if view.actor:
        actor_id = await user_id_named(conn, view.actor)
        if actor_id is None:
            return None
        where.append(audit_events.c.actor_id == actor_id)
    if view.target:
        target_id = await user_id_named(conn, view.target)
        if target_id is None:
            return None
        where.append(audit_events.c.target_id == target_id)
    if len(view.action) == 1:
        where.append(audit_events.c.action == view.action[0])  # several: one query each, merged
    if view.target_type:
        where.append(audit_events.c.target_type == view.target_type)
    if view.target_id:
        where.append(audit_events.c.target_id == int(view.target_id))
    if since := parse_when(view.since):
        where.append(audit_events.c.occurred_at >= since)
    if end := first_moment_after(view.until):
        where.append(audit_events.c.occurred_at < end)
    return where


ORDER_KEY = tuple_(audit_events.c.occurred_at, audit_events.c.id)


def _cursor(row) -> str:
    return keyset.encode_cursor(row.occurred_at.isoformat(), row.id)


def _ordered(table, ascending: bool):
    if ascending:
        return table.c.occurred_at.asc(), table.c.id.asc()
    return table.c.occurred_at.desc(), table.c.id.desc()


def page_query(view: AuditFilter, where: list, ascending: bool, limit: int):
    """The events of a page. With several actions, one index range per action, each already
    in order, merged: `action IN (…) ORDER BY occurred_at` would sort every match per page."""
    if len(view.action) < 2:
        return select(audit_events).where(*where).order_by(*_ordered(audit_events, ascending)).limit(limit)
    parts = [select(audit_events).where(*where, audit_events.c.action == action)
             .order_by(*_ordered(audit_events, ascending)).limit(limit).subquery()
             for action in view.action]
    merged = union_all(*(select(part) for part in parts)).subquery()
    return select(merged).order_by(*_ordered(merged, ascending)).limit(limit)


async def load_page(conn, view: AuditFilter) -> keyset.Page:
    where = await conditions(conn, view)
    if where is None:
        return keyset.Page([], 1, None, None, None)
    backwards = bool(view.before)
    cursor = keyset.decode_cursor(view.before or view.after, datetime.fromisoformat) \
        if (view.before or view.after) else None
    if cursor:
        where.append(ORDER_KEY > tuple_(*cursor) if backwards else ORDER_KEY < tuple_(*cursor))
    rows = (await conn.execute(page_query(view, where, ascending=backwards, limit=PAGE_SIZE + 1))).all()
    return keyset.page_of(rows, PAGE_SIZE, view, backwards, cursor is not None, _cursor)


async def export_batch(conn, view: AuditFilter, where: list, last: tuple | None, size: int):
    """The next `size` events of an export, newest first, after `last` = (occurred_at, id) of
    the previous batch's last event. Each batch is a short read of its own: no connection is
    held while a client takes its time over the rows already sent."""
    if last:
        where = [*where, ORDER_KEY < tuple_(*last)]
    return (await conn.execute(page_query(view, where, ascending=False, limit=size))).all()


async def counts_since(conn, since: datetime, actions) -> dict[str, int]:
    """Events of each of `actions` since a moment, for the dashboard: one range of the action
    index per action. Grouping every event since then by action walked the whole action index
    on SQLite (5,000,000 events: 400 ms)."""
    query = (select(audit_events.c.action, func.count())
             .where(audit_events.c.action.in_(actions), audit_events.c.occurred_at >= since)
             .group_by(audit_events.c.action))
    return dict((await conn.execute(query)).all())


async def recent_by_actor(conn, user_id: int, limit: int):
    """What this person did last, newest first."""
    query = (select(audit_events).where(audit_events.c.actor_id == user_id)
             .order_by(audit_events.c.occurred_at.desc(), audit_events.c.id.desc()).limit(limit))
    return (await conn.execute(query)).all()


async def get_event(conn, event_id: int):
    return (await conn.execute(select(audit_events).where(audit_events.c.id == event_id))).first()


async def users_by_id(conn, ids) -> dict:
    """What a revert needs to know of each of these users that still exists, by id."""
    query = select(users.c.id, users.c.username, users.c.email, users.c.role, users.c.active, users.c.version,
                   users.c.deleted_at, users.c.created_at).where(users.c.id.in_(list(ids)))
    return {row.id: row for row in (await conn.execute(query)).all()}
