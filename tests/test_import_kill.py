"""A CSV import over HTTP on the real server, SIGKILLed in the middle of its batches: every
process of the server frozen at a moment a write transaction is open, then killed. After
each kill the database holds whole batches only (each created row has its one user and its
one audit event; no row without an outcome has a user); once the dead runner's lease has run
out, a restarted server goes on where the last committed batch ended and every row is
created exactly once. The import's page shows the progress during the run and the result
after the restart."""
import asyncio
import os
import random
import re
import signal
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select, text, update

from conftest import PASSWORD, csrf_from, start_hypercorn
from test_migrations import scratch_url  # noqa: F401 (a fixture: a database of this test's own)
from web.accounts import queries as accounts
from web.core import audit_trail
from web.core.db import Database, utcnow
from web.core.tables import audit_events, import_rows, imports, outbox, users
from web.imports import jobs

ROWS = 400
KILLS = 1  # one kill and one resume: each more costs a server start (two workers on PostgreSQL)
WAIT_SECONDS = 120  # for the import to move on; a bound on a broken run, not a timing


def people_csv() -> bytes:
    """ROWS users, every tenth of them inactive (created without an invitation)."""
    return ("username,email,active\n" + "".join(
        f"person{n},person{n}@example.com,{'no' if n % 10 == 9 else 'yes'}\n" for n in range(ROWS))).encode()


# ---- the server, and killing all of it -----------------------------------------------------

def descendants(pid: int) -> list[int]:
    """Every process under `pid` (Hypercorn's workers, multiprocessing's resource tracker)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for its new parent to reap it counts: it runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def write_transaction_open(db: Database) -> bool:
    """Whether a connection other than this test's holds an open write transaction."""
    if db.is_sqlite:
        probe = sqlite3.connect(db.engine.url.database, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError as error:
            assert "locked" in str(error), error
            return True
        finally:
            probe.close()
    async with db.read() as conn:
        # A transaction gets its xid at its first write (a batch's first statement renews the lease).
        return (await conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"))).scalar_one() > 0


def freeze(process) -> list[int]:
    """SIGSTOP to the server's master (so that it cannot start new workers), then to every
    process under it; returns them all."""
    os.kill(process.pid, signal.SIGSTOP)
    pids = [process.pid, *descendants(process.pid)]
    signal_all(pids, signal.SIGSTOP)
    return pids


async def kill_all(process, pids: list[int]) -> None:
    """SIGKILL to every process of the server (frozen or not), and wait until none runs."""
    signal_all(pids, signal.SIGKILL)
    process.wait(timeout=10)
    for _ in range(WAIT_SECONDS * 100):
        if all(gone(pid) for pid in pids):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still running after SIGKILL: {[pid for pid in pids if not gone(pid)]}")


async def kill_mid_transaction(process, db: Database) -> None:
    """SIGKILL to every process of the server, at a moment one of them is inside a write
    transaction: frozen, and if no transaction is open (between two batches), let run a
    moment and frozen again. Nothing is left running, not even an orphaned worker."""
    for _ in range(1000):
        pids = freeze(process)
        if await write_transaction_open(db):
            return await kill_all(process, pids)
        signal_all(pids, signal.SIGCONT)
        await asyncio.sleep(0.002)
    raise AssertionError("no write transaction was ever open while the import ran")


async def start_server(database_url: str, log_dir: Path, workers: int, cookies: httpx.Cookies):
    process, url = await asyncio.to_thread(start_hypercorn, database_url, log_dir, workers)
    return process, httpx.AsyncClient(base_url=url, cookies=cookies, timeout=30)


async def log_in(client: httpx.AsyncClient, username: str) -> str:
    """Signs in through the login form; returns the CSRF token of the session's pages."""
    form = await client.get("/login")
    response = await client.post("/login", data={
        "identifier": username, "password": PASSWORD, "csrf_token": csrf_from(form.text)})
    assert response.status_code == 303, (response.status_code, response.text[:300])
    return csrf_from((await client.get("/users/import")).text)


# ---- the database's state ----------------------------------------------------------------

async def job_of(db: Database, job_id: int):
    async with db.read() as conn:
        return await jobs.get(conn, job_id)


async def until(db: Database, job_id: int, done, what: str):
    """The job once `done(job)` (or once it has ended)."""
    for _ in range(WAIT_SECONDS * 100):
        job = await job_of(db, job_id)
        if done(job) or job.state != jobs.RUNNING:
            return job
        await asyncio.sleep(0.01)
    raise AssertionError(f"the import did not reach {what}")


async def assert_consistent(db: Database, job_id: int, admin_id: int) -> int:
    """Whole batches only (a batch ends after BATCH rows or BATCH_SECONDS): each row with
    outcome 'created' has exactly one user (the one it names) and one 'create' event; no row without an outcome has a user; the job's counts,
    the invitations and the audit chain agree. Returns how many rows are created."""
    async with db.read() as conn:
        stored = (await conn.execute(select(import_rows).where(import_rows.c.import_id == job_id))).all()
        people = {row.username: row.id for row in (await conn.execute(
            select(users.c.username, users.c.id).where(users.c.id != admin_id))).all()}
        events = (await conn.execute(select(audit_events.c.target_id, audit_events.c.changes)
                                     .where(audit_events.c.action == "create"))).all()
        invitations = (await conn.execute(select(func.count()).select_from(outbox)
                                          .where(outbox.c.kind == "invite"))).scalar_one()
        job = await jobs.get(conn, job_id)
    created = [row for row in stored if row.outcome == "created"]
    assert {row.outcome for row in stored} <= {"created", ""}, "every row of the file is fine"
    # The job's counts move in the transaction that creates the rows: a batch half applied
    # (rows without their count, or a count without its rows) shows here.
    assert (job.created, job.skipped, job.failed) == (len(created), 0, 0)
    assert len(people) == len(created), "a user for every created row and for nothing else"
    for row in created:
        assert people.get(row.username) == row.user_id, row
    assert not [row.username for row in stored if not row.outcome and row.username in people]
    per_user = {}
    for event in events:
        assert event.changes["import"] == [None, job_id]
        per_user[event.target_id] = per_user.get(event.target_id, 0) + 1
    assert per_user == {row.user_id: 1 for row in created}, "one 'create' event per created user"
    assert invitations == sum(1 for row in created if row.active == "yes")
    verdict = await audit_trail.verify(db)
    assert verdict.intact, verdict
    return len(created)


async def lease_run_out(db: Database, job_id: int) -> None:
    """As if the dead runner's lease had run out: its expiry moved a second into the past."""
    async with db.write() as conn:
        await conn.execute(update(imports).where(imports.c.id == job_id)
                           .values(claimed_until=utcnow() - timedelta(seconds=1)))


# ---- the test ----------------------------------------------------------------------------

async def test_an_import_killed_mid_batch_resumes_and_creates_every_row_once(scratch_url, password_hash, tmp_path):  # noqa: F811
    workers = 1 if scratch_url.startswith("sqlite") else 2
    db = Database(scratch_url)
    await db.create_schema()
    async with db.write() as conn:
        admin_id = await accounts.create_user(conn, "importer", "importer@example.com", password_hash, "Admin",
                                              confirmed=True)
    spread = random.Random(ROWS)  # the kills' points in their batches: the same draws at every run
    process, client = await start_server(scratch_url, tmp_path, workers, httpx.Cookies())
    try:
        token = await log_in(client, "importer")
        uploaded = await client.post("/users/import", data={"csrf_token": token},
                                     files={"file": ("people.csv", people_csv(), "text/csv")})
        assert uploaded.status_code == 303, uploaded.text[:300]
        job_id = int(re.fullmatch(r"/users/import/(\d+)", uploaded.headers["Location"]).group(1))
        preview = await client.get(f"/users/import/{job_id}")
        assert f"{ROWS} rows: {ROWS} ready, 0 with problems" in preview.text
        started = await client.post(f"/users/import/{job_id}/start", data={"csrf_token": token})
        assert started.status_code == 303, started.text[:300]

        created, batch_seconds = 0, None
        for _ in range(KILLS):
            job = await until(db, job_id, lambda job: job.created > created, f"more than {created} rows")
            if batch_seconds is None:  # how long a batch takes on this machine: the kills spread over one
                committed, begun = job.created, time.monotonic()
                job = await until(db, job_id, lambda job: job.created > committed, f"more than {committed} rows")
                batch_seconds = time.monotonic() - begun
            assert job.state == jobs.RUNNING and job.created < ROWS, "the import ended before the kills"
            shown = await client.get(f"/users/import/{job_id}")  # a reload shows the progress, resumed
            assert "Importing…" in shown.text
            assert job.created <= int(re.search(rf"(\d+) of {ROWS} rows done", shown.text).group(1)) < ROWS
            await asyncio.sleep(spread.random() * batch_seconds)  # somewhere in the next batch
            await client.aclose()
            await kill_mid_transaction(process, db)
            created = await assert_consistent(db, job_id, admin_id)
            assert 0 < created < ROWS
            await lease_run_out(db, job_id)
            # The session outlives the server: it is a row in the database.
            process, client = await start_server(scratch_url, tmp_path, workers, client.cookies)

        job = await until(db, job_id, lambda job: False, "its end")
        assert (job.state, job.created, job.skipped, job.failed, job.total) == (jobs.DONE, ROWS, 0, 0, ROWS)
        assert await assert_consistent(db, job_id, admin_id) == ROWS
        async with db.read() as conn:
            finished = (await conn.execute(select(audit_events).where(audit_events.c.action == "import"))).all()
        assert [(event.target_id, event.changes["created"]) for event in finished] == [(job_id, [None, ROWS])]
        result = await client.get(f"/users/import/{job_id}")
        assert "Import finished" in result.text
        assert f"{ROWS} created, 0 skipped, 0 failed, of {ROWS} rows." in result.text
        download = await client.get(f"/users/import/{job_id}/result.csv")
        assert download.text.count(",created,") == ROWS
    finally:
        await client.aclose()
        if process.poll() is None:
            await kill_all(process, freeze(process))
        await db.dispose()
