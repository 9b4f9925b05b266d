"""The audit trail's hash chain: events edited, deleted or inserted directly in the database
are found by audit-verify with the right id; with AUDIT_HMAC_KEY an attacker who rebuilds
the hashes without the key is still found; pruning leaves a chain that verifies; and parallel
writers on two Hypercorn workers over PostgreSQL leave one chain with no gap."""
import asyncio
import os
import subprocess
import sys
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.event import listen

from conftest import ROOT, SECRET, csrf_from, hypercorn
from helpers import event_row, execute, insert_events, rows, run_cli, scalar, signed_in, text
from web.core import audit_trail as audit
from web.core.db import Database, utcnow
from web.core.tables import audit_chain, audit_events

KEY = "an audit key of at least thirty-two characters"
EVENTS = 12
# Failed logins at once over two workers: each costs an argon2 check (against a dummy hash),
# so more of them add CPU time, not contention; a busy machine took over 60 s for 50.
WRITERS = 24


@pytest.fixture(params=["sha256", "hmac"])
async def chain_db(request, db, database_url):
    """The test database, emptied, as the app opens it without the key or with it."""
    keyed = Database(database_url, audit_key=KEY if request.param == "hmac" else "")
    yield keyed
    await keyed.dispose()


async def write_events(db, count: int = EVENTS) -> list[int]:
    """`count` events, each recorded by the app in a transaction of its own; their ids."""
    for n in range(count):
        async with db.write() as conn:
            await audit.record(conn, "update", "user", 1000 + n, actor=audit.Actor(7, "alice"),
                               changes={"email": [f"old{n}@example.com", f"ünï{n}@example.com"]}, ip="192.0.2.9")
    return [row.id for row in await chain(db)][-count:]


async def chain(db):
    """The events in chain order."""
    return await rows(db, select(audit_events).order_by(audit_events.c.chain_position))


async def head(db):
    return (await rows(db, select(audit_chain)))[0]


def verify_cli(database_url: str, *args: str, key: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": SECRET, "AUDIT_HMAC_KEY": key}
    return subprocess.run([sys.executable, "run.py", "audit-verify", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


async def assert_broken_at(db, event_id: int | None, says: str) -> None:
    verdict = await audit.verify(db)
    assert not verdict.intact
    assert verdict.event_id == event_id, verdict
    assert says in verdict.problem, verdict


# ---- an untouched chain ----------------------------------------------------------------------

async def test_every_recorded_event_is_sealed_in_order_and_the_chain_verifies(chain_db):
    ids = await write_events(chain_db)
    events = await chain(chain_db)
    assert [e.chain_position for e in events] == list(range(1, EVENTS + 1))
    assert [e.id for e in events] == sorted(ids)
    top = await head(chain_db)
    assert (top.position, top.chain_hash) == (EVENTS, events[-1].chain_hash)
    assert top.scheme == audit.scheme(chain_db.audit_key)
    verdict = await audit.verify(chain_db)
    assert verdict.intact and verdict.checked == EVENTS and verdict.head_hash == top.chain_hash


async def test_a_seal_on_sqlite_reads_the_head_in_the_events_insert(chain_db, database_url):
    """SQLite's write transaction holds the only write lock from its BEGIN: the head the first
    INSERT returns is the one the seal would read, and the seal only writes (PostgreSQL locks
    the head row at the end and notifies the listeners)."""
    await write_events(chain_db, 1)  # the head row exists
    statements = []
    listen(chain_db.engine.sync_engine, "before_cursor_execute",
           lambda _c, _cur, statement, *_: statements.append(statement))
    async with chain_db.write() as conn:
        for n in range(2):
            await audit.record(conn, "update", "user", 2000 + n, actor=audit.Actor(7, "alice"))
    sealing = statements[2:]  # after the two INSERTs
    assert len(sealing) == (2 if database_url.startswith("sqlite") else 4), sealing
    events = await chain(chain_db)
    assert [e.target_id for e in events[-2:]] == [2000, 2001] and events[-1].chain_position == 3
    assert (await head(chain_db)).position == 3 and (await audit.verify(chain_db)).intact


async def test_audit_verify_prints_the_head_and_exits_0(db, database_url):
    await write_events(db)
    result = run_cli("audit-verify", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (await head(db)).chain_hash
    assert f"{EVENTS} / {EVENTS} events" in result.stderr and "intact" in result.stderr


async def test_an_event_of_a_transaction_that_rolls_back_leaves_no_gap(chain_db):
    await write_events(chain_db, 2)
    with pytest.raises(RuntimeError):
        async with chain_db.write() as conn:
            await audit.record(conn, "update", "user", 1, actor=audit.CLI)
            raise RuntimeError("the change fails after its event was written")
    await write_events(chain_db, 1)
    assert [e.chain_position for e in await chain(chain_db)] == [1, 2, 3]
    assert (await audit.verify(chain_db)).intact


async def test_the_target_name_is_stored_and_hashed(db, make_user):
    bob = await make_user("Customer", username="bob")
    async with db.write() as conn:
        await audit.record(conn, "update", "user", bob["id"], actor=audit.CLI, changes={"active": [True, False]})
        await audit.record(conn, "login", "user", bob["id"], actor=audit.Actor(bob["id"], "bob"))
        await audit.record(conn, "purge", "user", 999, actor=audit.CLI, target_name="gone")
        await audit.record(conn, "export", "audit", None, actor=audit.CLI)
    assert [e.target_name for e in await chain(db)] == ["bob", "bob", "gone", ""]
    first = (await chain(db))[0]
    await execute(db, update(audit_events).where(audit_events.c.id == first.id).values(target_name="mallory"))
    await assert_broken_at(db, first.id, "does not match its hash")


# ---- tampering -------------------------------------------------------------------------------

@pytest.mark.parametrize("edit", [
    {"changes": {"email": ["old4@example.com", "attacker@example.com"]}},
    {"actor_name": "bob"},
    {"occurred_at": utcnow() - timedelta(days=3)},
    {"ip": "203.0.113.1"},
    {"target_id": 1},
])
async def test_an_edited_event_is_found_with_its_id(chain_db, database_url, edit):
    ids = await write_events(chain_db)
    await execute(chain_db, update(audit_events).where(audit_events.c.id == ids[4]).values(**edit))
    await assert_broken_at(chain_db, ids[4], "does not match its hash")
    result = verify_cli(database_url, key=chain_db.audit_key)
    assert result.returncode == 1 and f"event {ids[4]}" in result.stderr, result.stderr
    assert result.stdout == ""


async def test_a_deleted_event_is_found_by_the_event_after_it(chain_db):
    ids = await write_events(chain_db)
    await execute(chain_db, delete(audit_events).where(audit_events.c.id == ids[6]))
    await assert_broken_at(chain_db, ids[7], "the events between were deleted")


async def test_an_event_deleted_with_the_chain_renumbered_is_found(chain_db):
    ids = await write_events(chain_db)
    await execute(chain_db, delete(audit_events).where(audit_events.c.id == ids[6]))
    for later in ids[7:]:
        await execute(chain_db, update(audit_events).where(audit_events.c.id == later)
                      .values(chain_position=audit_events.c.chain_position - 1))
    await assert_broken_at(chain_db, ids[7], "does not match its hash")


async def test_an_inserted_event_is_found(chain_db):
    await write_events(chain_db)
    await execute(chain_db, insert(audit_events).values(event_row(utcnow(), action="login", ip="192.0.2.66")))
    inserted = await scalar(chain_db, select(audit_events.c.id).where(audit_events.c.ip == "192.0.2.66"))
    await assert_broken_at(chain_db, inserted, "not in the chain")


async def test_an_event_inserted_beyond_the_head_is_found(chain_db):
    await write_events(chain_db)
    await execute(chain_db, insert(audit_events).values(
        **event_row(utcnow(), action="login", ip="192.0.2.77"), chain_position=EVENTS + 3, chain_hash="0" * 64))
    inserted = await scalar(chain_db, select(audit_events.c.id).where(audit_events.c.ip == "192.0.2.77"))
    await assert_broken_at(chain_db, inserted, "beyond the head")


async def test_an_event_inserted_in_the_middle_is_found(chain_db):
    """The attacker makes room (moves the later events up one place) and fills it."""
    ids = await write_events(chain_db)
    for later in reversed(ids[5:]):
        await execute(chain_db, update(audit_events).where(audit_events.c.id == later)
                      .values(chain_position=audit_events.c.chain_position + 1))
    previous = (await chain(chain_db))[4].chain_hash
    await execute(chain_db, insert(audit_events).values(
        **event_row(utcnow(), action="login", ip="192.0.2.88"), chain_position=6, chain_hash=previous))
    await execute(chain_db, update(audit_chain).values(position=EVENTS + 1))
    inserted = await scalar(chain_db, select(audit_events.c.id).where(audit_events.c.ip == "192.0.2.88"))
    await assert_broken_at(chain_db, inserted, "does not match its hash")


async def test_events_deleted_from_the_end_are_found(chain_db):
    ids = await write_events(chain_db)
    await execute(chain_db, delete(audit_events).where(audit_events.c.id.in_(ids[-2:])))
    await assert_broken_at(chain_db, None, f"the chain ends at position {EVENTS - 2}")


async def test_events_deleted_from_the_end_with_the_head_moved_back_are_caught_by_expect_head(
        chain_db, database_url):
    ids = await write_events(chain_db)
    kept = verify_cli(database_url, key=chain_db.audit_key)
    assert kept.returncode == 0, kept.stderr
    expected = kept.stdout.strip()
    await execute(chain_db, delete(audit_events).where(audit_events.c.id.in_(ids[-2:])))
    last = (await chain(chain_db))[-1]
    await execute(chain_db, update(audit_chain).values(position=last.chain_position, chain_hash=last.chain_hash))

    assert (await audit.verify(chain_db)).intact, "without the kept head, a cut end is not visible"
    result = verify_cli(database_url, "--expect-head", expected, key=chain_db.audit_key)
    assert result.returncode == 1, result.stderr
    assert "deleted from its end" in result.stderr
    await write_events(chain_db, 1)  # the chain grows on: a kept head stays valid
    assert (await audit.verify(chain_db, expect_head=(await chain(chain_db))[-2].chain_hash)).intact


async def rebuild_plainly_from(db, position: int) -> None:
    """What an attacker without the key does after an edit: recompute every hash from there
    on with plain SHA-256 and the published serialisation, and move the head."""
    events = await chain(db)
    previous = events[position - 2].chain_hash if position > 1 else ""
    for event in events[position - 1:]:
        previous = audit.link(event, event.chain_position, previous, "")
        await execute(db, update(audit_events).where(audit_events.c.id == event.id).values(chain_hash=previous))
    await execute(db, update(audit_chain).values(chain_hash=previous, scheme=audit.SHA256))


async def test_with_the_key_an_edit_with_the_chain_rebuilt_without_it_is_found(db, database_url):
    keyed = Database(database_url, audit_key=KEY)
    try:
        ids = await write_events(keyed)
        await execute(db, update(audit_events).where(audit_events.c.id == ids[4])
                      .values(changes={"email": ["old4@example.com", "attacker@example.com"]}))
        await rebuild_plainly_from(db, 5)
        await assert_broken_at(keyed, ids[4], "does not match its hash")
        result = verify_cli(database_url, key=KEY)
        assert result.returncode == 1 and f"event {ids[4]}" in result.stderr, result.stderr
        # Without the key, the verifier is told it cannot check, rather than "intact".
        await execute(db, update(audit_chain).values(scheme=audit.HMAC_SHA256))
        assert verify_cli(database_url).returncode == 2
    finally:
        await keyed.dispose()


async def test_without_the_key_a_rebuilt_chain_verifies(db):
    """What plain SHA-256 does not detect (docs/AUDIT.md): someone who can write the database
    and recomputes the hashes after an edit."""
    ids = await write_events(db)
    await execute(db, update(audit_events).where(audit_events.c.id == ids[4]).values(actor_name="bob"))
    await rebuild_plainly_from(db, 5)
    assert (await audit.verify(db)).intact


# ---- pruning -----------------------------------------------------------------------------------

async def old_and_new_events(db) -> list[int]:
    """40 events 40 days old (sealed as the migration seals), then EVENTS new ones."""
    await insert_events(db, [event_row(utcnow() - timedelta(days=40, minutes=n), action="login") for n in range(40)])
    return await write_events(db)


async def test_prune_leaves_a_checkpoint_and_the_chain_still_verifies(chain_db, database_url):
    new = await old_and_new_events(chain_db)
    assert await audit.prune(chain_db, utcnow() - timedelta(days=30), batch=15) == 40
    left = await chain(chain_db)
    assert [e.id for e in left] == new + [left[-1].id] and left[-1].action == "prune"
    top = await head(chain_db)
    assert top.checkpoint_position == 40
    assert left[-1].changes["checkpoint"] == [None, f"40:{top.checkpoint_hash}"]
    assert (await audit.verify(chain_db)).intact
    result = verify_cli(database_url, key=chain_db.audit_key)
    assert result.returncode == 0, result.stderr


async def test_after_a_prune_deleting_the_first_remaining_event_is_found(chain_db):
    new = await old_and_new_events(chain_db)
    await audit.prune(chain_db, utcnow() - timedelta(days=30))
    await execute(chain_db, delete(audit_events).where(audit_events.c.id == new[0]))
    await assert_broken_at(chain_db, new[1], "the events between were deleted")


async def test_events_deleted_from_the_start_with_the_checkpoint_moved_are_found(chain_db):
    """A checkpoint no prune recorded: the attacker deletes the first events and moves the
    checkpoint to the last one deleted, as a prune would."""
    ids = await write_events(chain_db)
    gone = (await chain(chain_db))[2]
    await execute(chain_db, delete(audit_events).where(audit_events.c.chain_position <= 3))
    await execute(chain_db, update(audit_chain).values(checkpoint_position=3, checkpoint_hash=gone.chain_hash))
    await assert_broken_at(chain_db, ids[3], "no audit-prune recorded")


# ---- the audit log page ------------------------------------------------------------------------

async def test_admins_see_the_chain_state_on_the_audit_log(app, db, make_user):
    _, admin = await signed_in(app, make_user, "Admin")
    await write_events(db, 3)
    page = await text(await admin.get("/audit"))
    assert "Chain not verified yet" in page and "head at position 3" in page
    await audit.verify(db)
    page = await text(await admin.get("/audit"))
    assert "Audit trail intact up to chain position 3" in page
    await execute(db, update(audit_events).where(audit_events.c.chain_position == 2).values(ip="203.0.113.5"))
    await audit.verify(db)
    assert "Audit trail broken: event" in await text(await admin.get("/audit"))
    _, manager = await signed_in(app, make_user, "Manager")
    assert 'id="audit-chain"' not in await text(await manager.get("/audit"))


# ---- parallel writers on two workers -----------------------------------------------------------

@pytest.fixture
def two_workers_behind_a_proxy(database_url, db, tmp_path):
    """Hypercorn with two worker processes, trusting 127.0.0.1 as a proxy: each request says in
    X-Forwarded-For which client it is, so the throttles count them apart."""
    if db.is_sqlite:
        pytest.skip("several workers need PostgreSQL (README)")
    with hypercorn(database_url, tmp_path, workers=2, TRUSTED_PROXIES="127.0.0.1") as url:
        yield url


async def failed_login(base_url: str, n: int) -> int:
    """A client of its own (address, cookies, connection) fails to log in: one audit event."""
    headers = {"X-Forwarded-For": f"198.51.100.{n}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=180, headers=headers,
                                 limits=httpx.Limits(max_keepalive_connections=0)) as client:
        page = await client.get("/login")
        response = await client.post("/login", data={
            "identifier": f"nobody{n}", "password": "not the password at all", "csrf_token": csrf_from(page.text)})
        return response.status_code


async def test_parallel_writers_on_two_workers_leave_one_chain_without_a_gap(two_workers_behind_a_proxy, db):
    answers = await asyncio.gather(*(failed_login(two_workers_behind_a_proxy, n) for n in range(WRITERS)))
    assert answers == [401] * WRITERS
    events = await chain(db)
    assert sorted(e.changes["identifier"][1] for e in events) == sorted(f"nobody{n}" for n in range(WRITERS))
    assert [e.chain_position for e in events] == list(range(1, WRITERS + 1))
    verdict = await audit.verify(db)
    assert verdict.intact and verdict.checked == WRITERS, verdict
