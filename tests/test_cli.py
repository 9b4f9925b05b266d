"""The command line, run.py, as an operator runs it: a subprocess on the test database."""
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from conftest import PASSWORD, ROOT, SECRET
from helpers import run_cli, run_module, scalar, user_count
from web.core import demo
from web.accounts import passwords
from web.accounts.validation import normalise_email, username_problem
from web.core.schema import render_schema_sql
from web.core.tables import ROLES, audit_events, roles, users

run = run_module()

COMMANDS = ("serve", "init-db", "create-admin", "demo-data", "schema")
# What the top-level --help says each command does.
PURPOSE = {
    "serve": "serve the app with Hypercorn",
    "init-db": "create the schema and roles",
    "create-admin": "create an Admin account",
    "demo-data": "add realistic fake users",
    "schema": "print the schema as SQL",
}


@pytest.fixture
def offline_url(tmp_path):
    """A database URL for commands that must not need one (help, schema)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'unused.sqlite3'}"


# ---- help -------------------------------------------------------------------------------

def test_help_lists_every_command_with_its_purpose(offline_url):
    result = run_cli("--help", database_url=offline_url)
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout
    for purpose in PURPOSE.values():
        assert purpose.lower() in " ".join(result.stdout.split()).lower()


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_exits_0_and_shows_its_usage(offline_url, command):
    result = run_cli(command, "--help", database_url=offline_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: run.py {command}")


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_describes_the_command(offline_url, command):
    result = run_cli(command, "--help", database_url=offline_url)
    assert PURPOSE[command].lower() in " ".join(result.stdout.split()).lower()


def test_create_admin_help_names_its_required_options(offline_url):
    result = run_cli("create-admin", "--help", database_url=offline_url)
    assert "--username" in result.stdout and "--email" in result.stdout


# ---- init-db ------------------------------------------------------------------------------

async def test_init_db_twice_leaves_exactly_the_three_roles(db, database_url):
    async with db.write() as conn:
        await conn.execute(sa.delete(roles))  # init-db, not the fixture, must create them
    for _ in range(2):
        result = run_cli("init-db", database_url=database_url)
        assert result.returncode == 0, result.stderr
    async with db.read() as conn:
        names = (await conn.execute(sa.select(roles.c.name))).scalars().all()
    assert sorted(names) == sorted(ROLES) == ["Admin", "Customer", "Manager"]


# ---- create-admin ------------------------------------------------------------------------

def create_admin(database_url: str, username: str = "root", email: str = "root@example.com",
                 password: str = PASSWORD):
    """run.py create-admin, with the password piped in."""
    return run_cli("create-admin", "--username", username, "--email", email,
                   database_url=database_url, stdin=password + "\n")


async def test_create_admin_creates_an_active_admin_with_the_piped_password(db, database_url):
    result = create_admin(database_url)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(users))).all()
    assert len(rows) == 1
    admin = rows[0]
    assert (admin.username, admin.email, admin.role, admin.active) == ("root", "root@example.com", "Admin", True)
    assert passwords.hasher.verify(PASSWORD, admin.password_hash)


async def test_create_admin_records_a_create_audit_event(db, database_url):
    result = create_admin(database_url)
    assert result.returncode == 0, result.stderr
    user_id = await scalar(db, sa.select(users.c.id).where(users.c.username == "root"))
    async with db.read() as conn:
        events = (await conn.execute(sa.select(audit_events))).all()
    assert len(events) == 1
    event = events[0]
    assert (event.action, event.target_type, event.target_id) == ("create", "user", user_id)
    assert event.changes["username"] == [None, "root"]
    assert event.changes["role"] == [None, "Admin"]


async def test_create_admin_stores_the_email_as_registration_does(db, database_url):
    result = create_admin(database_url, email="Root@EXAMPLE.com")
    assert result.returncode == 0, result.stderr
    stored = await scalar(db, sa.select(users.c.email).where(users.c.username == "root"))
    assert stored == normalise_email("Root@EXAMPLE.com")[0] == "Root@example.com"


async def test_create_admin_audit_event_names_run_py_as_its_actor(db, database_url):
    result = create_admin(database_url)
    assert result.returncode == 0, result.stderr
    async with db.read() as conn:
        event = (await conn.execute(sa.select(audit_events))).one()
    assert (event.actor_id, event.actor_name) == (None, "run.py")


@pytest.mark.parametrize("password, why", [
    ("1qaz2wsx3edc4rfv", "common"),                  # 16 characters, but on the common list
    ("short pass", "at least 15"),                   # too short
    ("rootroot rootroot rootroot", "username"),      # contains the username
])
async def test_create_admin_with_a_weak_password_is_refused(db, database_url, password, why):
    result = create_admin(database_url, email="boss@example.com", password=password)
    assert result.returncode != 0
    assert "Refused" in result.stderr
    assert why in result.stderr
    assert await user_count(db) == 0


@pytest.mark.parametrize("username, email, field", [
    ("ALICE", "other@example.com", "username"),
    ("someone", "Alice@EXAMPLE.com", "email"),
])
async def test_create_admin_with_a_taken_username_or_email_is_refused(
        db, database_url, make_user, username, email, field):
    await make_user(username="Alice", email="alice@example.com")
    result = create_admin(database_url, username, email)
    assert result.returncode != 0
    assert "Refused" in result.stderr
    assert field in result.stderr
    assert await user_count(db) == 1


# ---- demo-data ----------------------------------------------------------------------------

async def test_demo_data_adds_exactly_the_requested_users_each_time(db, database_url):
    outputs = []
    for expected_total in (300, 600):
        result = run_cli("demo-data", "--users", "300", database_url=database_url)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
        assert await user_count(db) == expected_total
    async with db.read() as conn:
        role_names = set((await conn.execute(sa.select(users.c.role).distinct())).scalars())
        hashes = set((await conn.execute(sa.select(users.c.password_hash).distinct())).scalars())
    # Admins are 1% of demo users: a 600-user batch from an arbitrary id offset (PostgreSQL ids
    # keep counting across tests) lacks one for ~0.4% of offsets, so Admin is checked on a
    # larger sample in test_demo_users_cover_every_role.
    assert {"Customer", "Manager"} <= role_names <= set(ROLES)
    for output in outputs:
        assert "$argon2" not in output
        for password_hash in hashes:
            assert password_hash not in output


async def test_demo_users_share_the_password_the_command_prints(db, database_url):
    result = run_cli("demo-data", "--users", "5", database_url=database_url)
    assert result.returncode == 0, result.stderr
    printed = result.stderr.rsplit("their password is", 1)[1].strip()
    async with db.read() as conn:
        hashes = set((await conn.execute(sa.select(users.c.password_hash))).scalars())
    assert len(hashes) == 1
    assert passwords.hasher.verify(printed, hashes.pop())


async def test_demo_data_leaves_postgresql_with_fresh_statistics(db, database_url):
    if db.is_sqlite:
        pytest.skip("PostgreSQL plans from statistics that a bulk load leaves stale")
    async with db.read() as conn:
        started = (await conn.execute(sa.text("SELECT now()"))).scalar_one()
    result = run_cli("demo-data", "--users", "200", database_url=database_url)
    assert result.returncode == 0, result.stderr
    async with db.read() as conn:
        analysed = (await conn.execute(sa.text(
            "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'users'"))).scalar_one()
    assert analysed is not None and analysed >= started


def test_demo_users_cover_every_role():
    sample = [row["role"] for start in (1, 301, 10_001) for row in demo.fake_users(3000, start, "hash")]
    assert set(sample) == set(ROLES)
    assert sample.count("Customer") > sample.count("Manager") > sample.count("Admin") > 0


def test_demo_users_pass_the_apps_own_checks():
    """An Admin editing a demo user's role must not be stopped by the demo's own data."""
    for row in demo.fake_users(500, 1, "hash"):
        assert username_problem(row["username"]) is None, row
        assert normalise_email(row["email"]) == (row["email"], None), row


def test_demo_data_refuses_fewer_than_one_user(offline_url):
    result = run_cli("demo-data", "--users", "0", database_url=offline_url)
    assert result.returncode != 0
    assert "--users" in result.stderr


# ---- first start --------------------------------------------------------------------------

async def test_first_start_creates_one_admin_and_the_demo_users_once(db, capsys):
    await run.first_start(db)
    async with db.read() as conn:
        admins = (await conn.execute(sa.select(users).where(users.c.username == "admin"))).all()
    assert len(admins) == 1
    assert admins[0].role == "Admin" and admins[0].active
    assert await user_count(db) == 1 + run.DEMO_USERS_ON_FIRST_START == 251
    assert "Admin login:" in capsys.readouterr().err

    await run.first_start(db)
    assert await user_count(db) == 251
    assert "Admin login:" not in capsys.readouterr().err


async def test_first_start_leaves_a_database_with_users_alone(db, make_user):
    await make_user(username="existing")
    await run.first_start(db)
    async with db.read() as conn:
        names = (await conn.execute(sa.select(users.c.username))).scalars().all()
    assert names == ["existing"]


# ---- schema -------------------------------------------------------------------------------

def test_schema_command_prints_exactly_what_schema_sql_holds(offline_url):
    result = run_cli("schema", database_url=offline_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "schema.sql").read_text(encoding="utf-8")
    assert result.stdout == render_schema_sql()


def test_serve_on_another_port_builds_links_with_that_port(db, database_url):
    """Without BASE_URL, development links (and the /mail hint) name the port served. The host
    is one this machine does not have: the hint is printed before Hypercorn fails to bind, and
    no port is taken from anyone."""
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": SECRET, "GATEHOUSE_ENV": "development"}
    env.pop("BASE_URL", None)
    process = subprocess.Popen([sys.executable, "run.py", "serve", "--host", "192.0.2.1", "--port", "8123"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        hint = next(line for line in process.stderr if line.startswith("Mail:"))
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "http://localhost:8123/mail" in hint
