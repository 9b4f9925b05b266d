"""Schema upgrades: a database made by an older release is migrated in place, keeps its data,
and ends up exactly like a fresh install (fresh install == fully migrated old install)."""
import asyncio
import json
import os
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import SECRET, _pg_admin
from test_schema import outside_metadata, reflected_indexes, schema_diffs
from alembic.script import ScriptDirectory

from web.core import audit_trail
from web.core.db import Database, alembic_config, ensure_roles, utcnow
from web.core.tables import audit_events, roles, sessions, users
from web.users.queries import TableState, load_page

ROOT = Path(__file__).resolve().parent.parent
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


pytestmark = pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")


@pytest.fixture
async def scratch_url(database_url, tmp_path):
    """A database of its own, empty, of the same kind as the test database."""
    if database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'scratch.sqlite3'}"
        return
    name = f"gatehouse_migrate_{os.getpid()}_{secrets.token_hex(3)}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    yield database_url.rsplit("/", 1)[0] + "/" + name
    await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def scratch(scratch_url):
    database = Database(scratch_url)
    yield database
    await database.dispose()


async def add_data(db) -> dict:
    """Users, sessions and audit events as the first release wrote them."""
    now = utcnow().replace(microsecond=0)
    async with db.write() as conn:
        await ensure_roles(conn)
        for n, role in enumerate(("Admin", "Manager", "Customer", "Customer"), start=1):
            await conn.execute(sa.insert(users).values(
                id=n, username=f"user{n}", email=f"user{n}@example.com", password_hash=f"hash{n}",
                role=role, active=n != 4, version=n, created_at=now - timedelta(days=n),
                updated_at=now, last_login_at=now if n % 2 else None))
        await conn.execute(sa.insert(sessions).values(
            id="a" * 64, user_id=1, remember=True, created_at=now, last_seen_at=now,
            expires_at=now + timedelta(days=1), user_agent="Firefox", ip="192.0.2.1"))
        await conn.execute(sa.insert(audit_events), [
            {"occurred_at": now, "actor_id": 1, "actor_name": "user1", "action": "update",
             "target_type": "user", "target_id": 3, "changes": {"email": ["a@example.com", "b@example.com"]},
             "ip": "192.0.2.1"},
            {"occurred_at": now, "actor_id": None, "actor_name": "", "action": "login_failed",
             "target_type": "user", "target_id": None, "changes": {"identifier": [None, "ünï©ødé"]}, "ip": ""},
        ])
    return await snapshot(db)


# What the first release had: later revisions add tables and columns of their own.
FIRST_RELEASE_TABLES = {"roles", "users", "sessions", "audit_events", "login_throttle"}
ADDED_LATER = {"audit_events": {"target_name", "chain_position", "chain_hash"},
               "users": {"email_confirmed_at", "invited_at", "theme", "single_key_shortcuts"},
               "sessions": {"reauthenticated_at"}}


def first_release_columns(table: sa.Table) -> list[sa.Column]:
    return [column for column in table.c if column.name not in ADDED_LATER.get(table.name, set())]


async def snapshot(db) -> dict:
    async with db.read() as conn:
        return {table.name: sorted(json.dumps([str(v) for v in row]) for row in
                                   (await conn.execute(sa.select(*first_release_columns(table)))).all())
                for table in (roles, users, sessions, audit_events)}


async def drop_version_table(db) -> None:
    async with db.write() as conn:
        await conn.exec_driver_sql("DROP TABLE alembic_version")


async def assert_like_a_fresh_install(upgraded, fresh) -> None:
    assert await upgraded.revision() == HEAD
    assert await schema_diffs(upgraded) == []
    assert await reflected_indexes(upgraded) == await reflected_indexes(fresh)
    assert await outside_metadata(upgraded) == await outside_metadata(fresh)


async def test_a_new_database_is_migrated_to_head(scratch, db):
    await scratch.create_schema()
    await assert_like_a_fresh_install(scratch, db)
    async with scratch.read() as conn:
        assert len((await conn.execute(sa.select(roles))).all()) == 3


async def test_revision_0001_is_the_first_release_schema(scratch):
    await scratch.migrate("0001")
    async with scratch.read() as conn:
        tables = set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
        user_indexes = {i["name"]: i for i in await conn.run_sync(lambda c: sa.inspect(c).get_indexes("users"))}
    assert tables == FIRST_RELEASE_TABLES | {"alembic_version"}
    assert "ix_users_active" not in user_indexes and "ix_users_last_login" not in user_indexes
    assert user_indexes["ix_users_role"]["column_names"] == ["role"]


async def test_an_old_database_with_data_is_upgraded_in_place(scratch, db):
    await scratch.migrate("0001")
    before = await add_data(scratch)
    await scratch.create_schema()
    assert await snapshot(scratch) == before
    await assert_like_a_fresh_install(scratch, db)


async def test_upgrading_counts_existing_addresses_as_confirmed_and_no_one_as_invited(scratch):
    """Revision 0006: accounts made before addresses were checked are not asked to confirm."""
    await scratch.migrate("0005")
    await add_data(scratch)
    await scratch.create_schema()
    async with scratch.read() as conn:
        rows = (await conn.execute(sa.select(users.c.created_at, users.c.email_confirmed_at, users.c.invited_at))).all()
    assert len(rows) == 4
    assert all(row.email_confirmed_at == row.created_at and row.invited_at is None for row in rows)


async def test_a_database_from_before_migrations_is_recognised_and_upgraded(scratch, db):
    """The first release made its tables with create_all and kept no alembic_version."""
    await scratch.migrate("0001")
    await drop_version_table(scratch)
    before = await add_data(scratch)
    await scratch.create_schema()
    assert await snapshot(scratch) == before
    await assert_like_a_fresh_install(scratch, db)


async def test_an_unversioned_database_with_the_sort_indexes_is_stamped_0002_and_upgraded(scratch, db):
    """The last release before migrations (create_all, sort indexes) is recognised as 0002."""
    await scratch.migrate("0002")
    await drop_version_table(scratch)
    before = await add_data(scratch)
    await scratch.create_schema()
    assert await snapshot(scratch) == before
    await assert_like_a_fresh_install(scratch, db)


async def test_upgrading_makes_the_existing_users_searchable_by_any_part(scratch):
    """Revision 0008 indexes the users already there (SQLite: the FTS5 table is filled from users)."""
    await scratch.migrate("0007")
    await add_data(scratch)
    await scratch.create_schema()
    async with scratch.read() as conn:
        everyone = {"user1", "user2", "user3", "user4"}
        for term, expected in (("SER3", {"user3"}), ("3@exam", {"user3"}), ("@example.COM", everyone)):
            found = await load_page(conn, TableState(q=term))
            assert {row.username for row in found.rows} == expected and found.total == len(expected), term


@pytest.mark.parametrize("key", ["", "an audit key of at least thirty-two characters"])
async def test_upgrading_seals_the_existing_events_into_a_chain_in_id_order(scratch_url, key):
    """Revision 0004 starts the hash chain at the first existing event (with AUDIT_HMAC_KEY
    when the app has one) and stores each user target's name."""
    database = Database(scratch_url, audit_key=key)
    try:
        await database.migrate("0003")
        await add_data(database)
        await database.create_schema()
        async with database.read() as conn:
            events = (await conn.execute(sa.select(audit_events).order_by(audit_events.c.id))).all()
        assert [e.chain_position for e in events] == [1, 2]
        assert [e.target_name for e in events] == ["user3", ""]
        verdict = await audit_trail.verify(database)
        assert verdict.intact and verdict.checked == 2
        assert verdict.head_hash == events[-1].chain_hash
        async with database.read() as conn:
            assert (await audit_trail.chain_head(conn)).scheme == audit_trail.scheme(key)
    finally:
        await database.dispose()


async def test_migrating_again_changes_nothing(scratch, db):
    await scratch.create_schema()
    before = await add_data(scratch)
    await scratch.create_schema()
    await scratch.create_schema()
    assert await snapshot(scratch) == before
    await assert_like_a_fresh_install(scratch, db)


async def test_two_processes_migrating_at_once_both_succeed(scratch_url, scratch, db):
    others = [Database(scratch_url) for _ in range(3)]
    try:
        await asyncio.gather(*(other.create_schema() for other in others))
    finally:
        for other in others:
            await other.dispose()
    await assert_like_a_fresh_install(scratch, db)


async def test_init_db_upgrades_an_old_database(scratch_url, scratch, db):
    await scratch.migrate("0001")
    before = await add_data(scratch)
    await scratch.dispose()
    env = {**os.environ, "DATABASE_URL": scratch_url, "SECRET_KEY": SECRET}
    result = subprocess.run([sys.executable, "run.py", "init-db"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert await snapshot(scratch) == before
    await assert_like_a_fresh_install(scratch, db)
