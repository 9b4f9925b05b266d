"""The outbox: mail written in the transaction of the change that causes it, so a crash
never loses a message nor sends one for a change that did not happen (docs/MAIL.md).

A sender claims one due message at a time in a short write transaction (a lease:
claimed_until), talks to the SMTP server with no transaction open, then marks the message
sent, due again later, or failed, in another short transaction.
"""
import base64
import hashlib
import hmac
import random
from datetime import datetime, timedelta

from cryptography.fernet import Fernet
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
SEALED = "[sealed {}]"  # where the i-th secret of a sealed message goes back in at sending
PAGE_SIZE = 50


def seal_key(secret_key: str) -> Fernet:
    """The key that seals secrets in stored messages, derived from SECRET_KEY: a copy of the
    database alone opens no link."""
    derived = hmac.new(secret_key.encode(), b"gatehouse outbox seal", hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


async def enqueue(conn, message: Message, *, secrets=(), seal: Fernet | None = None,
                  now: datetime | None = None) -> int:
    """Adds `message` in the caller's write transaction; it is sent once that commits.
    `secrets` (tokens in its links) are blanked from the stored bodies once it is sent or
    given up. With a `seal` (production) they are never stored in clear: the bodies keep a
    marker, the secrets are kept encrypted, and the sender puts them back as it sends."""
    now = now or utcnow()
    secrets = [s for s in secrets if s]
    text, html = message.text, message.html
    if seal is not None:
        for i, secret in enumerate(secrets):
            text, html = text.replace(secret, SEALED.format(i)), html.replace(secret, SEALED.format(i))
        secrets = [seal.encrypt(secret.encode()).decode() for secret in secrets]
    return (await conn.execute(insert(outbox).values(
        message_id=message.message_id, kind=message.kind, recipient=message.recipient,
        subject=message.subject, text_body=text, html_body=html,
        secrets=secrets or None, created_at=now, due_at=now,
    ).returning(outbox.c.id))).scalar_one()


def opened(row, seal: Fernet) -> tuple[str, str]:
    """The bodies to send: a sealed message's secrets put back (InvalidToken when they were
    sealed under another SECRET_KEY)."""
    text, html = row.text_body, row.html_body
    for i, stored in enumerate(row.secrets or ()):
        marker = SEALED.format(i)
        if marker in text or marker in html:
            secret = seal.decrypt(stored.encode()).decode()
            text, html = text.replace(marker, secret), html.replace(marker, secret)
    return text, html


# This process's senders, woken when it commits a message (post): mail leaves at once rather
# than at a sender's next look.
posted = Wakeup()


async def post(conn, message: Message, *, secrets=(), seal: Fernet | None = None) -> int:
    """enqueue(), and this process's senders woken once the transaction commits."""
    message_id = await enqueue(conn, message, secrets=secrets, seal=seal)
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
    for i, secret in enumerate(row.secrets or ()):
        for hidden in (secret, SEALED.format(i)):
            text, html = text.replace(hidden, BLANKED), html.replace(hidden, BLANKED)
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
