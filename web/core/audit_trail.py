"""Writing the audit trail: one row per event, in the caller's transaction, sealed into a
hash chain as that transaction's last statements (docs/AUDIT.md).

Each event's hash covers a canonical serialisation of its fields and the hash of the event
before it in the chain. The chain's order is the position assigned under the head's lock,
not the id: on PostgreSQL ids come from a sequence when a row is inserted, and transactions
commit in another order. With AUDIT_HMAC_KEY the hash is an HMAC, which nobody without the
key can recompute.
"""
import hashlib
import hmac
import json
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import String, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .background import Wakeup
from .db import before_commit, utcnow
from .tables import audit_chain, audit_events, users

# The serialisation's version and the digest, both hashed with every event: a new format or
# mode can never be taken for an old one.
SHA256 = "gatehouse-audit-v1-sha256"
HMAC_SHA256 = "gatehouse-audit-v1-hmac-sha256"
HEAD = audit_chain.c.id == 1
# Sealed events wake this process's live streams once their transaction commits, and on
# PostgreSQL every process LISTENing on SEALED_CHANNEL (web/live/broker.py).
SEALED = Wakeup()
SEALED_CHANNEL = "gatehouse_audit"


class Actor(NamedTuple):
    """Who did it, when that is not the signed-in user (a new registration, the CLI)."""
    id: int | None
    username: str


CLI = Actor(None, "run.py")


class Event(NamedTuple):
    """The fields of an event that its hash covers, besides its position and the previous hash."""
    id: int
    occurred_at: datetime
    actor_id: int | None
    actor_name: str
    action: str
    target_type: str
    target_id: int | None
    target_name: str
    changes: dict | None
    ip: str


EVENT_COLUMNS = [audit_events.c[name] for name in Event._fields]
SET_LINK = (update(audit_events).where(audit_events.c.id == bindparam("event_id"))
            .values(chain_position=bindparam("position"), chain_hash=bindparam("hash")))


def diff(before: dict, after: dict) -> dict:
    """{field: [old, new]} for the fields whose value changed."""
    return {k: [before.get(k), after[k]] for k in after if before.get(k) != after[k]}


def scheme(key: str) -> str:
    return HMAC_SHA256 if key else SHA256


def link(event, position: int, previous: str, key: str) -> str:
    """The hash of `event` at `position` in the chain, after the event whose hash is `previous`.

    The serialisation is a JSON array (so no field can spill into the next), keys sorted, no
    spaces, ASCII only; times to the microsecond, as both databases store them."""
    message = json.dumps([
        scheme(key), position, event.id, event.occurred_at.isoformat(timespec="microseconds"),
        event.actor_id, event.actor_name, event.action, event.target_type, event.target_id,
        event.target_name, event.changes, event.ip, previous,
    ], sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    if key:
        return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


def chained(events, position: int, previous: str, key: str) -> tuple[list[dict], int, str]:
    """The links of `events` (in id order) appended after (`position`, `previous`), as
    SET_LINK's parameters, and the new head's position and hash."""
    links = []
    for event in sorted(events, key=lambda e: e.id):
        position += 1
        previous = link(event, position, previous, key)
        links.append({"event_id": event.id, "position": position, "hash": previous})
    return links, position, previous


def _target_name(target_type: str, target_id: int | None, actor_id: int | None, actor_name: str,
                 given: str | None) -> tuple[int | None, str]:
    """(the user whose username, as of this transaction, the INSERT reads as the target's name;
    the name when it reads none): the name given, or the actor's own when they act on themselves
    (a login, a profile change), else the target user's."""
    if given is not None:
        return None, given
    if target_type != "user" or target_id is None:
        return None, ""
    if target_id == actor_id and actor_name:
        return None, actor_name
    return target_id, ""


class Recorded(NamedTuple):
    """An event waiting for its seal, with the chain's head as its INSERT saw it (SQLite: the
    transaction holds the database's only write lock from its BEGIN, and nothing but the seal
    moves the head, so this is the head the seal would lock; None when there is no head row, or
    on PostgreSQL, where the seal locks the head row itself)."""
    event: Event
    head: tuple[int, str] | None


# The head read in the event's INSERT: a statement less, four trips to aiosqlite's thread
# less, in the transaction every other writer waits for.
HEAD_NOW = (select(audit_chain.c.position).where(HEAD).scalar_subquery().label("head_position"),
            select(audit_chain.c.chain_hash).where(HEAD).scalar_subquery().label("head_hash"))
# The INSERT and the head's move, built once: building them and working out their cache keys
# for each event cost more than running them, while every other writer waits. The target's
# name is the user :name_of's as the INSERT reads it, else the one given.
INSERT_EVENT = insert(audit_events).values(target_name=func.coalesce(
    select(users.c.username).where(users.c.id == bindparam("name_of")).scalar_subquery(), bindparam("given_name", type_=String),
)).returning(audit_events.c.id, audit_events.c.target_name, *HEAD_NOW)
MOVE_HEAD = update(audit_chain).where(HEAD).values(
    scheme=bindparam("to_scheme"), position=bindparam("to_position"), chain_hash=bindparam("to_hash"),
    sealed_at=bindparam("at"))


async def record(conn, action: str, target_type: str, target_id: int | None = None, *,
                 actor=None, changes: dict | None = None, ip: str = "", target_name: str | None = None) -> None:
    """Writes an event in `conn`'s write transaction; it is sealed into the chain just before
    that transaction commits (`seal`). Pass `target_name` when the target user is gone."""
    values = dict(
        occurred_at=utcnow(),
        actor_id=getattr(actor, "id", None),
        actor_name=getattr(actor, "username", "") or "",
        action=action,
        target_type=target_type,
        target_id=target_id,
        changes=changes,
        ip=ip or "",
    )
    name_of, name = _target_name(target_type, target_id, values["actor_id"], values["actor_name"], target_name)
    row = (await conn.execute(INSERT_EVENT, {**values, "name_of": name_of, "given_name": name})).one()
    event = Event(id=row.id, target_name=row.target_name, **values)
    sqlite = conn.dialect.name == "sqlite"
    before_commit(conn, seal).append(Recorded(event, (row.head_position, row.head_hash) if sqlite else None))


# ---- the chain's head ------------------------------------------------------------------------

async def seal(db, conn, recorded: list[Recorded]) -> None:
    """The last statements of a transaction that recorded these events: lock the chain's head
    (held until the commit, a moment later), give each event its place and hash, move the head.
    Taken last, the lock never waits on anything else a transaction locks (the last Admins)."""
    seen = recorded[0].head
    if seen is None or seen[0] is None:
        head = await _lock_head(conn)
        seen = head.position, head.chain_hash
    links, position, chain_hash = chained([r.event for r in recorded], *seen, db.audit_key)
    await conn.execute(SET_LINK, links)
    await conn.execute(MOVE_HEAD, {"to_scheme": scheme(db.audit_key), "to_position": position, "to_hash": chain_hash,
                                   "at": utcnow()})
    if not db.is_sqlite:  # delivered at the commit, and only then
        await conn.execute(select(func.pg_notify(SEALED_CHANNEL, str(position))))
    SEALED.after(conn)


async def _lock_head(conn):
    query = select(audit_chain).where(HEAD).with_for_update()
    head = (await conn.execute(query)).first()
    if head is None:
        # Only when the row was deleted: carry on from the last sealed event (audit-verify
        # still sees any gap). Parallel transactions may get here at once: one row wins.
        last = (await conn.execute(select(audit_events.c.chain_position, audit_events.c.chain_hash)
                                   .where(audit_events.c.chain_position.is_not(None))
                                   .order_by(audit_events.c.chain_position.desc()).limit(1))).first()
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        await conn.execute(dialect.insert(audit_chain).values(
            id=1, position=last.chain_position if last else 0, chain_hash=last.chain_hash if last else "")
            .on_conflict_do_nothing())
        head = (await conn.execute(query)).one()
    return head


async def chain_head(conn):
    """The head row (None on a database whose chain has not started): for the audit log page."""
    return (await conn.execute(select(audit_chain).where(HEAD))).first()


def seal_backlog(sync_conn, key: str, batch: int = 5000) -> int:
    """Seals the events not yet in the chain, in id order, after the head: existing events when
    the chain is introduced (migration 0004), or events a test inserted directly. Synchronous, as migrations run; holds
    the head."""
    head = sync_conn.execute(select(audit_chain).where(HEAD).with_for_update()).first()
    if head is None:
        sync_conn.execute(insert(audit_chain).values(id=1))
        head = _EMPTY
    position, chain_hash, last_id, sealed = head.position, head.chain_hash, 0, 0
    while rows := sync_conn.execute(select(*EVENT_COLUMNS).where(
            audit_events.c.chain_position.is_(None), audit_events.c.id > last_id)
            .order_by(audit_events.c.id).limit(batch)).all():
        links, position, chain_hash = chained(rows, position, chain_hash, key)
        sync_conn.execute(SET_LINK, links)
        last_id, sealed = rows[-1].id, sealed + len(rows)
    if sealed:
        sync_conn.execute(update(audit_chain).where(HEAD).values(
            scheme=scheme(key), position=position, chain_hash=chain_hash, sealed_at=utcnow()))
    return sealed


# ---- pruning -----------------------------------------------------------------------------------

async def prune(db, cutoff, batch: int = 5000, progress=None) -> int:
    """Deletes the events older than `cutoff` in batches (short write locks), then records the
    prune. What goes is a prefix of the chain, up to the first event at or after `cutoff`; each
    batch leaves its last event's place and hash in the head as the checkpoint the rest of the
    chain verifies from."""
    async with db.read() as conn:
        bound = await _prune_bound(conn, cutoff)
    removed = 0
    while True:
        async with db.write() as conn:
            count = await _prune_batch(conn, bound, batch)
        removed += count
        if progress:
            progress(removed)
        if count < batch:
            break
    async with db.write() as conn:
        head = await chain_head(conn)
        checkpoint = f"{head.checkpoint_position}:{head.checkpoint_hash}" if head else "0:"
        await record(conn, "prune", "audit", None, actor=CLI, changes={
            "removed": [None, removed], "older_than": [None, cutoff.isoformat(timespec="seconds")],
            "checkpoint": [None, checkpoint]})
    return removed


async def _prune_bound(conn, cutoff) -> int:
    """The chain position up to which events go: the one before the first event kept."""
    events = audit_events.c
    first_kept = (await conn.execute(select(events.chain_position).where(
        events.occurred_at >= cutoff, events.chain_position.is_not(None))
        .order_by(events.occurred_at, events.id).limit(1))).scalar()
    if first_kept is not None:
        return first_kept - 1
    return (await conn.execute(select(func.max(events.chain_position)).where(events.occurred_at < cutoff))).scalar() or 0


async def _prune_batch(conn, bound: int, batch: int) -> int:
    events = audit_events.c
    last = (await conn.execute(select(events.chain_position, events.chain_hash).where(events.chain_position <= bound)
                               .order_by(events.chain_position).limit(batch))).all()
    if not last:
        return 0
    count = (await conn.execute(delete(audit_events).where(events.chain_position <= last[-1].chain_position))).rowcount
    await _lock_head(conn)  # last: the head's row lock is held only for the commit
    await conn.execute(update(audit_chain).where(HEAD).values(
        checkpoint_position=last[-1].chain_position, checkpoint_hash=last[-1].chain_hash))
    return count


# ---- verifying -------------------------------------------------------------------------------

class Verdict(NamedTuple):
    intact: bool
    position: int  # of the last event verified (the head when intact)
    head_hash: str
    event_id: int | None = None  # the first broken link's event, when there is one
    problem: str = ""
    checked: int = 0


class _Head(NamedTuple):
    """The head of a chain that has not started."""
    scheme: str = ""
    position: int = 0
    chain_hash: str = ""
    checkpoint_position: int = 0
    checkpoint_hash: str = ""


_EMPTY = _Head()


class KeyNeeded(Exception):
    """The chain was sealed with AUDIT_HMAC_KEY, which this process does not have."""


async def verify(db, *, batch: int = 5000, expect_head: str = "", progress=None) -> Verdict:
    """Walks the chain from the checkpoint to the head in batches and returns the first broken
    link: an event edited (its hash no longer matches), deleted (a gap in the positions),
    inserted (no place in the chain, or one beyond the head), or events cut from the end
    (the head points past them; with `expect_head`, a hash kept from an earlier run that is no
    longer in the chain). The result is stored in the head for the audit log page."""
    async with db.read() as conn:
        head = await chain_head(conn) or _EMPTY
    if head.scheme == HMAC_SHA256 and not db.audit_key:
        raise KeyNeeded("the chain is sealed with AUDIT_HMAC_KEY: set it to verify the chain")
    verdict = await _walk(db, head, batch, expect_head, progress)
    if verdict.intact:
        verdict = await _outside_the_chain(db, head, verdict)
    await _store_verdict(db, verdict)
    return verdict


async def _walk(db, head, batch: int, expect_head: str, progress) -> Verdict:
    key, events = db.audit_key, audit_events.c
    position, previous = head.checkpoint_position, head.checkpoint_hash
    expected_found = expect_head in ("", previous)
    recorded_checkpoint = None
    first_id = None
    while position < head.position:
        async with db.read() as conn:
            rows = (await conn.execute(select(*EVENT_COLUMNS, events.chain_position, events.chain_hash).where(
                events.chain_position > position, events.chain_position <= head.position)
                .order_by(events.chain_position).limit(batch))).all()
        if not rows:
            return Verdict(False, position, previous, None,
                           f"the chain ends at position {position}, but its head is at {head.position}: "
                           "the events after it were deleted")
        for row in rows:
            first_id = first_id or row.id
            if row.chain_position != position + 1:
                return Verdict(False, position, previous, row.id,
                               f"event {row.id} at position {row.chain_position} follows position {position}: "
                               "the events between were deleted")
            if link(row, row.chain_position, previous, key) != row.chain_hash:
                return Verdict(False, position, previous, row.id,
                               f"event {row.id} at position {row.chain_position} does not match its hash: "
                               "it was edited or inserted, or the event before it was edited")
            position, previous = row.chain_position, row.chain_hash
            expected_found = expected_found or previous == expect_head
            if row.action == "prune" and row.changes and "checkpoint" in row.changes:
                recorded_checkpoint = row.changes["checkpoint"][1]
        if progress:
            progress(position - head.checkpoint_position, head.position - head.checkpoint_position)
    checked = position - head.checkpoint_position
    if previous != head.chain_hash:
        return Verdict(False, position, previous, None, "the head's hash is not the last event's", checked)
    if head.checkpoint_position and recorded_checkpoint != f"{head.checkpoint_position}:{head.checkpoint_hash}":
        return Verdict(False, position, previous, first_id,
                       f"the chain starts after position {head.checkpoint_position}, a checkpoint no audit-prune "
                       "recorded: the events before it were deleted", checked)
    if not expected_found:
        return Verdict(False, position, previous, None,
                       f"the expected head {expect_head} is not in the chain: events were deleted from its end",
                       checked)
    return Verdict(True, position, previous, None, "", checked)


async def _outside_the_chain(db, head, verdict: Verdict) -> Verdict:
    """Events with no place in the chain, a place before its checkpoint, or one beyond its head
    (the head is read again after the events: a seal moves both in one transaction)."""
    events = audit_events.c
    async with db.read() as conn:
        stray = (await conn.execute(select(events.id).where(
            events.chain_position.is_(None) | (events.chain_position <= head.checkpoint_position))
            .order_by(events.id).limit(1))).scalar()
        last = (await conn.execute(select(events.id, events.chain_position).where(events.chain_position.is_not(None))
                                   .order_by(events.chain_position.desc()).limit(1))).first()
        now = await chain_head(conn) or _EMPTY
    if stray is not None:
        return verdict._replace(intact=False, event_id=stray,
                                problem=f"event {stray} is not in the chain: it was inserted")
    if last and last.chain_position > now.position:
        return verdict._replace(intact=False, event_id=last.id,
                                problem=f"event {last.id} claims position {last.chain_position}, beyond the head: "
                                "it was inserted")
    return verdict


async def _store_verdict(db, verdict: Verdict) -> None:
    async with db.write() as conn:
        await conn.execute(update(audit_chain).where(HEAD).values(
            verified_at=utcnow(), verified_position=verdict.position, verified_problem=verdict.problem[:300]))
