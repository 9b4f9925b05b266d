"""Delivery: drain the outbox to the SMTP server of MAIL_URL (aiosmtplib).

Every worker runs `send_forever` (started from before_serving); `run.py mail-send` drains
once. One message at a time: claim it (a short write transaction), send it with no
transaction open (SQLite's write lock is never held while an SMTP server takes its time),
mark it. Delivery is at least once: a sender killed after the server's 250 and before the
mark leaves the message claimed, and it is sent again, with the same Message-ID, once the
claim runs out (docs/MAIL.md).
"""
import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib
from cryptography.fernet import Fernet, InvalidToken

from ..core.background import in_every_worker, repeat
from ..core.db import utcnow
from . import outbox

# Each SMTP step (connect, EHLO, AUTH, MAIL, RCPT, DATA) waits at most this long.
TIMEOUT = 30


# The server's answers about this message (its sender, recipient or content), as opposed to
# the connection: only these, with a 5xx code, give a message up at once. A 5xx at login
# (a wrong password in MAIL_URL) is retried until the message is too old, like an outage.
REFUSALS = (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPRecipientsRefused,
            aiosmtplib.SMTPDataError)


class Permanent(Exception):
    """The server refused the message for good (a 5xx answer)."""


@dataclass
class Drained:
    sent: int = 0
    retry: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def email_of(row, mail_from: str, seal: Fernet) -> EmailMessage:
    """The stored message as MIME: text and HTML alternatives (a sealed message's secrets put
    back), its stable Message-ID."""
    try:
        text, html = outbox.opened(row, seal)
    except InvalidToken:
        raise Permanent("its links were sealed under another SECRET_KEY; ask for a new message") from None
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = row.recipient
    message["Subject"] = row.subject
    message["Message-ID"] = row.message_id
    message["Date"] = format_datetime(row.created_at.replace(tzinfo=UTC))
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def smtp_code(error: Exception) -> int | None:
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused) and error.recipients:
        return error.recipients[0].code
    return getattr(error, "code", None)


def describe(error: Exception) -> str:
    if isinstance(error, Permanent):
        return str(error)
    return f"{type(error).__name__}: {error}"[:500]


class Connection:
    """One SMTP session, opened at the first message and again after the server hangs up."""

    def __init__(self, server, mail_from: str, seal: Fernet):
        self.server, self.mail_from, self.seal, self.smtp = server, mail_from, seal, None

    async def send(self, row) -> None:
        """Sends one message; raises Permanent on a 5xx, anything else is worth a retry."""
        message = email_of(row, self.mail_from, self.seal)
        try:
            if self.smtp is None:
                self.smtp = aiosmtplib.SMTP(
                    hostname=self.server.host, port=self.server.port, use_tls=self.server.use_tls,
                    start_tls=self.server.start_tls, username=self.server.username or None,
                    password=self.server.password or None, timeout=TIMEOUT)
                await self.smtp.connect()
            await self.smtp.send_message(message)
        except aiosmtplib.SMTPException as error:
            if not isinstance(error, REFUSALS):
                await self.close()  # the connection, greeting, TLS or login failed: start afresh
                raise
            if 500 <= (smtp_code(error) or 0) < 600:
                raise Permanent(describe(error)) from error
            raise
        except OSError:
            await self.close()
            raise

    async def close(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is not None and smtp.is_connected:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()


async def drain(db, config, *, now=utcnow, stopping: asyncio.Event | None = None, rng=random) -> Drained:
    """Sends every message due at `now()` (a clock: tests move it instead of sleeping),
    until none is left or `stopping` is set; a message under way is finished and marked first."""
    done = Drained()
    connection = Connection(config.mail_server, config.mail_from, outbox.seal_key(config.secret_key))
    try:
        while not (stopping and stopping.is_set()) and (row := await outbox.claim(db, now())) is not None:
            await deliver(db, connection, row, now, done, rng)
    finally:
        await connection.close()
    return done


async def deliver(db, connection, row, now, done: Drained, rng) -> None:
    try:
        await connection.send(row)
    except (Permanent, aiosmtplib.SMTPException, OSError) as error:  # 5xx; 4xx, dropped connections
        at, problem = now(), describe(error)
        done.errors.append(problem)
        if isinstance(error, Permanent) or outbox.expired(row, at):
            await outbox.mark_failed(db, row, at, problem)
            done.failed += 1
        else:
            await outbox.mark_retry(db, row, at, problem, rng)
            done.retry += 1
    else:
        await outbox.mark_sent(db, row, now())
        done.sent += 1


async def send_forever(db, config, logger, stopping: asyncio.Event) -> None:
    """The worker's task: drain, then rest, until `stopping` is set."""
    await repeat(lambda: drain(db, config, stopping=stopping), outbox.posted, stopping, config.poll_seconds,
                 logger, "sending mail from the outbox")


def init_app(app) -> None:
    """Starts the sender in this worker when MAIL_URL names a server; without one (development)
    messages stay in the outbox, readable on /mail."""
    config = app.config["GATEHOUSE"]
    if config.mail_server is not None:
        in_every_worker(app, "mail_sender", lambda stopping: send_forever(app.db, config, app.logger, stopping))
