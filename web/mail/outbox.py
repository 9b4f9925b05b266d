"""The outbox: mail written in the transaction of the change that causes it, so a crash
never loses a message nor sends one for a change that did not happen (docs/MAIL.md).

A sender claims one due message at a time in a short write transaction (a lease:
claimed_until), talks to the SMTP server with no transaction open, then marks the message
sent, due again later, or failed, in another short transaction.
"""
import random
from datetime import datetime, timedelta

from sqlalchemy import insert, or_, select, update

from ..core import audit_trail as audit
from ..core.background import Wakeup
from ..core.db import utcnow
from ..core.tables import UNFINISHED, outbox
from .messages import Message

# Longer than one delivery can take (every SMTP step has a timeout: sender.TIMEOUT), so a
# claim never runs out while its sender still talks to the server.
LEASE = timedelta(minutes=10)
FIRST_RETRY = timedelta(minutes=1)
LONGEST_WAIT = timedelta(hours=1)
# A message not delivered this long after it was written is given up.
GIVE_UP_AFTER = timedelta(days=2)
BLANKED = "[removed once sent]"
PAGE_SIZE = 50


async def enqueue(conn, message: Message, *, secrets=(), now: datetime | None = None) -> int:
    """Adds `message` in the caller's write transaction; it is sent once that commits.
    `secrets` (tokens in its links) are blanked from the stored bodies once it is sent or
    given up."""
    now = now or utcnow()
    return (await conn.execute(insert(outbox).values(
        message_id=message.message_id, kind=message.kind, recipient=message.recipient,
        subject=message.subject, text_body=message.text, html_body=message.html,
        secrets=[s for s in secrets if s] or None, created_at=now, due_at=now,
    ).returning(outbox.c.id))).scalar_one()


# This process's senders, woken when it commits a message (post): mail leaves at once rather
# than at a sender's next look.
posted = Wakeup()


async def post(conn, message: Message, *, secrets=()) -> int:
    """enqueue(), and this process's senders woken once the transaction commits."""
    message_id = await enqueue(conn, message, secrets=secrets)
    posted.after(conn)
    return message_id


async def claim(db, now: datetime):
    """The next due message, leased to this sender until now + LEASE, its attempt counted; or
    None. Two senders never hold the same message: PostgreSQL skips rows another claim has
    locked; SQLite runs one write transaction at a time."""
    due = (select(outbox.c.id)
           .where(UNFINISHED, outbox.c.due_at <= now,
                  or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= now))
           .order_by(outbox.c.due_at, outbox.c.id).limit(1))
    if not db.is_sqlite:
        due = due.with_for_update(skip_locked=True)
    async with db.write() as conn:
        return (await conn.execute(
            update(outbox).where(outbox.c.id == due.scalar_subquery())
            .values(claimed_until=now + LEASE, attempts=outbox.c.attempts + 1)
            .returning(*outbox.c))).one_or_none()


def without_secrets(row) -> dict:
    """The bodies with every secret replaced, and the secrets forgotten."""
    text, html = row.text_body, row.html_body
    for secret in row.secrets or ():
        text, html = text.replace(secret, BLANKED), html.replace(secret, BLANKED)
    return {"text_body": text, "html_body": html, "secrets": None}


def _finish(row):
    return update(outbox).where(outbox.c.id == row.id).values(claimed_until=None)


async def mark_sent(db, row, now: datetime) -> None:
    async with db.write() as conn:
        await conn.execute(_finish(row).values(sent_at=now, last_error="", **without_secrets(row)))


def retry_delay(attempts: int, rng=random) -> timedelta:
    """Exponential back-off from FIRST_RETRY, at most LONGEST_WAIT, with a random half more or
    less, so that messages failing together do not all come back together."""
    base = min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_WAIT)
    return base * rng.uniform(0.5, 1.5)


def expired(row, now: datetime) -> bool:
    """Written GIVE_UP_AFTER ago or more: not worth another attempt."""
    return now - row.created_at >= GIVE_UP_AFTER


async def mark_retry(db, row, now: datetime, error: str, rng=random) -> None:
    """Due again after a back-off."""
    async with db.write() as conn:
        await conn.execute(_finish(row).values(due_at=now + retry_delay(row.attempts, rng), last_error=error[:500]))


async def mark_failed(db, row, now: datetime, error: str) -> None:
    """Given up for good, and audited in the same transaction."""
    async with db.write() as conn:
        await conn.execute(_finish(row).values(failed_at=now, last_error=error[:500], **without_secrets(row)))
        await audit.record(conn, "mail_failed", "mail", row.id, actor=audit.Actor(None, "mail sender"),
                           changes={"kind": [None, row.kind], "attempts": [None, row.attempts],
                                    "error": [None, error[:200]]})


async def newest(conn, before: int | None = None, limit: int = PAGE_SIZE):
    """A page of messages, newest first, older than the message `before` when given."""
    query = select(outbox).order_by(outbox.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(outbox.c.id < before)
    return (await conn.execute(query)).all()
