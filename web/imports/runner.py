"""Running an import: its rows become accounts in batches, each batch one write transaction
that creates the accounts, their invitations and audit events, and records each row's
outcome. A killed server loses at most the batch under way, which then never happened; the
job is taken up again (by this worker when it restarts, or by another) once its lease runs out,
and goes on from the first row without an outcome, so no row is created twice.

Every worker runs a task (from before_serving) that takes running jobs nobody holds, at once
when this worker starts one, else at its next look (BACKGROUND_POLL_SECONDS).
"""
import asyncio
import time
from datetime import timedelta

from sqlalchemy.exc import IntegrityError

from ..accounts import invitation, queries as accounts
from ..core import audit_trail as audit
from ..core.background import Wakeup, in_every_worker, repeat
from ..core.db import utcnow
from . import jobs, rows as checks

BATCH = 100
# A batch also ends once it has taken this long: on SQLite every other write waits for it
# (measured in docs/PERFORMANCE.md, "CSV import": 100 rows took up to 3 s on a loaded machine).
BATCH_SECONDS = 0.1
# Longer than a batch can take: a runner renews it at every batch.
LEASE = timedelta(seconds=60)
started = Wakeup()
IMPORTERS = ("Admin", "Manager")


def may_import(importer) -> bool:
    return importer is not None and importer.active and importer.deleted_at is None and \
        importer.invited_at is None and importer.role in IMPORTERS


async def create_account(conn, job, importer, row) -> tuple[str, str, int | None]:
    """(outcome, message, user id) of one row, created in a savepoint of the batch."""
    values = jobs.values_of(row)
    if problems := checks.field_problems(values, importer.role):
        return "failed", " ".join(problems.values()), None
    account = checks.account_of(values)
    if await accounts.username_taken(conn, account.username):
        return "skipped", checks.NAME_EXISTS, None
    if await accounts.email_taken(conn, account.email):
        return "skipped", checks.EMAIL_TAKEN, None
    try:
        async with conn.begin_nested():
            user_id = await _create(conn, account, importer)
    except IntegrityError:  # taken by someone else since the check above
        return "skipped", "An account with this username or email was created meanwhile.", None
    changes = {"username": [None, account.username], "email": [None, account.email], "role": [None, account.role],
               "import": [None, job.id]}
    if not account.active:
        changes["active"] = [None, False]
    await audit.record(conn, "create", "user", user_id, actor=audit.Actor(importer.id, importer.username),
                       changes=changes)
    how = "with the password hash given" if account.password_hash else \
        "invitation sent" if account.active else "inactive: no invitation sent"
    return "created", f"Created ({how}).", user_id


async def _create(conn, account: checks.Account, importer) -> int:
    if account.password_hash:
        # The address is the one the old system knew; the importer vouches for it.
        return await accounts.create_user(conn, account.username, account.email, account.password_hash,
                                          account.role, account.active, confirmed=True)
    user_id = await accounts.create_invited_user(conn, account.username, account.email, account.role)
    if account.active:
        await invitation.send(conn, await accounts.get_user(conn, user_id), importer.username)
    else:  # invited once an Admin activates the account and resends the invitation
        await accounts.update_user(conn, user_id, {"active": False})
    return user_id


async def run_batch(conn, job, importer) -> bool:
    """Creates the next batch of rows; False when none was left (the job is then finished)."""
    batch = await jobs.pending(conn, job.id, BATCH)
    if not batch:
        await jobs.finish(conn, job.id)
        counts = await jobs.tally(conn, job.id)
        await audit.record(conn, "import", "import", job.id, actor=audit.Actor(importer.id, importer.username),
                           changes={"file": [None, job.filename], "rows": [None, counts["rows"]],
                                    **{name: [None, counts[name]] for name in jobs.OUTCOMES}})
        return False
    counts = {name: 0 for name in jobs.OUTCOMES}
    ends = time.monotonic() + BATCH_SECONDS
    for row in batch:
        outcome, message, user_id = await create_account(conn, job, importer, row)
        await jobs.record(conn, job.id, row.line, outcome, message, user_id)
        counts[outcome] += 1
        if time.monotonic() >= ends:  # the rows left go in the next batch
            break
    await jobs.add_counts(conn, job.id, counts)
    return True


async def stop(conn, job) -> None:
    """The importer may no longer import (demoted, deactivated, deleted): the rows left are
    not created, and the job says why."""
    left = await jobs.pending(conn, job.id, job.total)
    for row in left:
        await jobs.record(conn, job.id, row.line, "failed", "Not created: the importer may no longer import users.")
    await jobs.add_counts(conn, job.id, {"failed": len(left)})
    await jobs.finish(conn, job.id, jobs.CANCELLED)
    await audit.record(conn, "import", "import", job.id, actor=audit.Actor(job.created_by, "importer"),
                       changes={"file": [None, job.filename], "stopped": [None, "the importer may no longer import"]})


async def run(db, job_id: int, now=utcnow, stopping: asyncio.Event | None = None) -> bool:
    """Runs the job to its end while this runner holds it; False when it could not take it, lost
    it (another runner holds it now), or was asked to stop (the job is then let go at once, for
    the next runner). `now` is a clock: tests move it."""
    held = now() + LEASE
    async with db.write() as conn:
        if not await jobs.claim(conn, job_id, now(), held):
            return False
    while True:
        if stopping is not None and stopping.is_set():
            async with db.write() as conn:
                await jobs.release(conn, job_id, held)
            return False
        async with db.write() as conn:
            renewed = now() + LEASE
            if not await jobs.extend(conn, job_id, held, renewed):
                return False
            held = renewed
            job = await jobs.get(conn, job_id)
            # Decided in the transaction that writes: a demoted importer creates nothing more.
            importer = await accounts.lock_user(conn, job.created_by) if job.created_by else None
            if not may_import(importer):
                await stop(conn, job)
                return True
            if not await run_batch(conn, job, importer):
                return True


async def run_due(db, stopping: asyncio.Event) -> None:
    async with db.read() as conn:
        due = await jobs.due(conn, utcnow())
    for job_id in due:
        await run(db, job_id, stopping=stopping)


def init_app(app) -> None:
    in_every_worker(app, "import_runner", lambda stopping: repeat(
        lambda: run_due(app.db, stopping), started, stopping, app.config["GATEHOUSE"].poll_seconds, app.logger, "running imports"))
