"""Reads reused for a few seconds (web/core/recent.py): the users table's totals. A write in
this process makes them stale at once; a write by another process (another worker, the CLI)
shows within the time limit. A session is never reused: every request reads its own, so a
write by another process counts at the very next request.

"Another process" is played by an engine of our own: its writes do not pass through
`Database.write`, exactly like those of another worker."""
import pytest
from sqlalchemy import delete, insert, update
from sqlalchemy.ext.asyncio import create_async_engine

from helpers import htmx, open_session, signed_in, text, total_shown
from web.users import queries as user_table
from web.core.db import utcnow
from web.core.recent import Recent
from web.core.tables import sessions as sessions_table, users

LIMIT = 5  # seconds: the time limit the tests give the caches


class Clock:
    """A clock the tests move by hand: nothing waits for a limit to run out."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(user_table, "_counts", Recent(LIMIT, size=64, clock=clock))
    return clock


@pytest.fixture
async def other_process(database_url):
    engine = create_async_engine(database_url)

    async def write(statement):
        async with engine.begin() as conn:
            await conn.execute(statement)
    yield write
    await engine.dispose()


async def test_an_answer_is_reused_until_this_process_writes(db):
    recent = Recent(60, size=8)
    reads = []

    async def read():
        reads.append(1)
        return len(reads)
    assert await recent.get("k", read) == 1
    assert await recent.get("k", read) == 1
    async with db.write():
        pass
    assert await recent.get("k", read) == 2
    assert await recent.get("other", read) == 3


async def test_no_answer_is_not_kept_and_answers_expire():
    clock = Clock()
    recent = Recent(LIMIT, size=8, clock=clock)
    answers = iter([None, "found", "again"])

    async def read():
        return next(answers)
    assert await recent.get("k", read) is None
    assert await recent.get("k", read) == "found"
    clock.advance(LIMIT - 0.1)
    assert await recent.get("k", read) == "found"
    clock.advance(0.2)
    assert await recent.get("k", read) == "again"


async def test_a_session_ended_by_another_process_is_refused_at_the_next_request(
        app, make_user, other_process):
    alice = await make_user(username="alice")
    client = app.test_client()
    sid = await open_session(app, client, alice["id"])
    assert (await client.get("/profile")).status_code == 200
    await other_process(delete(sessions_table).where(sessions_table.c.id == sid))
    assert (await client.get("/profile")).status_code == 302


async def test_a_role_taken_away_by_another_process_counts_at_the_next_request(
        app, make_user, other_process):
    boss, client = await signed_in(app, make_user, "Admin", username="boss")
    assert (await client.get("/users")).status_code == 200
    await other_process(update(users).where(users.c.id == boss["id"]).values(role="Customer"))
    assert (await client.get("/users")).status_code == 403


async def table_total(client) -> int:
    return total_shown(await text(await client.get("/users", headers=htmx("users-table"))))


async def test_the_table_total_follows_this_process_at_once_and_others_within_the_limit(
        app, db, make_user, clock, other_process):
    _, client = await signed_in(app, make_user, "Admin", username="boss")
    assert await table_total(client) == 1
    await make_user("Customer")  # through Database.write
    assert await table_total(client) == 2
    now = utcnow()
    await other_process(insert(users).values(
        username="elsewhere", email="elsewhere@example.com", password_hash="x", role="Customer",
        active=True, version=1, created_at=now, updated_at=now))
    assert await table_total(client) == 2  # another process's write: not seen within the limit
    clock.advance(LIMIT + 0.1)
    assert await table_total(client) == 3
