"""The test harness: the real app on a real SQLite file and a real PostgreSQL database,
a live server under Hypercorn, and Debian's Chromium driven by Playwright.

PostgreSQL and Chromium tests skip with a reason when either is missing, unless
REQUIRE_POSTGRES=1 / REQUIRE_BROWSER=1 (as in CI), when their absence fails the run.
"""
import asyncio
from contextlib import contextmanager
from dataclasses import dataclass
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jinja2
import pytest
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher
from sqlalchemy import delete

import loopback_smtp
from web import create_app
from web.accounts import passwords
from web.accounts import queries as user_queries
from web.core.config import Config
from web.core.db import Database, ensure_roles
from web.core.tables import metadata

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PASSWORD = "mosaic turnip harbor glide"
# In this process, passwords hash with argon2 at its cheapest (Django's advice to its tests,
# for the same reason): the production parameters spend about 180 ms of CPU per hash or
# check, and the suite logs in, registers and changes passwords over a thousand times.
# The tests of the parameters themselves ask for them (production_hashing); servers the
# tests start run with them.
PRODUCTION_HASHER = passwords.hasher
passwords.hasher = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1), BcryptHasher()))
SECRET = "test-secret-key-" + "x" * 32


def required(name: str) -> bool:
    return os.environ.get(name) == "1"


def skip_or_fail(reason: str, requirement: str):
    if required(requirement):
        pytest.fail(f"{reason} ({requirement}=1)", pytrace=False)
    pytest.skip(reason)


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


async def _pg_admin(statement: str) -> None:
    import asyncpg
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.hookimpl(tryfirst=True)  # marks first: -m browser selects by them
def pytest_collection_modifyitems(config, items):
    """Every test that drives Chromium is marked `browser`, and runs on SQLite only: the
    PostgreSQL runs cover the database layer and the multi-worker and concurrency cases over
    HTTP, where a browser adds nothing but time. So do tests marked `sqlite_only`: HTTP
    behaviour the database does not change. Their PostgreSQL variants are deselected, so they
    are not reported as skipped."""
    kept, deselected = [], []
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("database_url") == "postgres"
        sqlite_only = item.get_closest_marker("browser") or item.get_closest_marker("sqlite_only")
        (deselected if on_postgres and sqlite_only else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


# Modules whose tests share what their process holds: test_hostile_input's report counts what
# its property tests saw, test_bench's and test_proxies' module-scoped fixtures run a benchmark
# and a proxied server once. Under pytest-xdist (make test) each runs whole in one worker.
ONE_WORKER = {"tests/test_hostile_input.py", "tests/test_bench.py", "tests/test_proxies.py"}


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Each test goes to whichever worker is free, a ONE_WORKER module's all to one. (Not
    xdist_group marks: --dist loadgroup loses them on pytest 9.2, pytest-xdist#1386.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER else nodeid
    return Scheduling(config, log)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request, tmp_path_factory):
    """One database per kind and test run; tests reset its tables."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'gatehouse.sqlite3'}"
        return
    if not postgres_reachable():
        skip_or_fail("PostgreSQL is not reachable on 127.0.0.1:5432", "REQUIRE_POSTGRES")
    name = f"gatehouse_test_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    yield f"postgresql+asyncpg://{PG_ADMIN_URL.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def make_config(database_url: str, **overrides) -> Config:
    return Config(database_url=database_url, secret_key=SECRET, **overrides)


@pytest.fixture(scope="session")
async def migrated_url(database_url):
    """database_url, its schema created once for the run: migrating again for each test cost
    tens of milliseconds (alembic reads every migration script) and changed nothing."""
    await _create_schema(database_url)
    return database_url


@pytest.fixture
async def db(migrated_url):
    """The database, schema created (once: migrated_url), every table emptied, roles in place."""
    database = Database(migrated_url)
    async with database.write() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(delete(table))
        await ensure_roles(conn)
    yield database
    await database.dispose()


@pytest.fixture
def config(database_url):
    return make_config(database_url)


class CompiledTemplates(jinja2.BytecodeCache):
    """Templates compiled once per test process instead of once per app: every test makes an
    app of its own, and compiling the templates again took a third of such a test's time. A
    template whose source has changed no longer matches its checksum, and is compiled again."""

    def __init__(self):
        self.compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if (code := self.compiled.get(bucket.key)) is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self.compiled[bucket.key] = bucket.bytecode_to_string()


COMPILED_TEMPLATES = CompiledTemplates()


def build_url_builders_once() -> None:
    """Werkzeug compiles two URL builders for every route of every app, from generated
    source, and that was most of create_app's time: over a thousand apps per run. A builder
    depends only on the rule's parsed parts and defaults (it reaches the rule's converters
    through the rule it is bound to), so apps with the same routes can share them. A private
    method of werkzeug's: if it changes shape, the tests compile builders as before."""
    from werkzeug.routing import Rule
    compile_builder = getattr(Rule, "_compile_builder", None)
    if compile_builder is None:
        return
    builders = {}

    def shared(self, append_unknown: bool = True):
        key = (tuple(self._trace), repr(sorted((self.defaults or {}).items())), append_unknown)
        if (builder := builders.get(key)) is None:
            builder = builders[key] = compile_builder(self, append_unknown)
        return builder
    Rule._compile_builder = shared


build_url_builders_once()


@pytest.fixture
async def app(db, config):
    app = create_app(config)
    app.jinja_env.bytecode_cache = COMPILED_TEMPLATES  # the same environment settings for every app
    yield app
    await app.db.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def production_hashing(monkeypatch):
    """Passwords hash with the app's own argon2 parameters (see PRODUCTION_HASHER)."""
    monkeypatch.setattr(passwords, "hasher", PRODUCTION_HASHER)
    passwords.dummy_hash.cache_clear()
    yield
    passwords.dummy_hash.cache_clear()


@pytest.fixture(scope="session")
def password_hash():
    return passwords.hasher.hash(PASSWORD)


@pytest.fixture
def make_user(db, password_hash):
    """Creates an account; every test account's password is PASSWORD."""
    counter = iter(range(1, 10_000))

    async def make(role="Customer", username=None, email=None, active=True):
        n = next(counter)
        username = username or f"{role.lower()}{n}"
        email = email or f"{username}@example.com"
        async with db.write() as conn:
            user_id = await user_queries.create_user(conn, username, email, password_hash, role, active,
                                                       confirmed=True)
        return {"id": user_id, "username": username, "email": email, "role": role}
    return make


# ---- the live server and the browser ---------------------------------------------------

def free_port() -> int:
    """A port nothing listens on at the moment (for a server that must be unreachable)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LISTENING = re.compile(rb"Running on (http://\S+) ")


def wait_until_up(process, log_path: Path, logged_before: int = 0, timeout: float = 20) -> str:
    """The URL of a server started on port 0, once it answers /healthz.

    Hypercorn binds port 0, so the system gives it a free port, and logs which ("Running on
    http://127.0.0.1:PORT"): nothing else can take the port in between, as it could when a port
    was found free first and bound later. `logged_before` is the log's size when the process
    started: a restarted server appends to the log of the one before."""
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}; see {log_path}")
        if url is None and (found := LISTENING.search(log_path.read_bytes(), logged_before)):
            url = found.group(1).decode()
        if url and answers(url):
            return url
        time.sleep(0.1)
    raise RuntimeError(f"the server did not come up in time; see {log_path}")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1):
            return True
    except OSError:
        return False


def start_hypercorn(database_url: str, log_dir: Path, workers: int = 1, **env_extra: str):
    """The real app under Hypercorn with `workers` worker processes, on `database_url`; returns
    (process, URL) once it answers. Stop it with terminate() (graceful) or kill().

    It listens on a socket the test binds to port 0 and hands over (nothing can take the
    port in between), so the URL is known before the app starts: it is the app's BASE_URL,
    the address its mailed links point to."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    url = f"http://localhost:{listener.getsockname()[1]}"
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": SECRET, "GATEHOUSE_ENV": "development",
           "BASE_URL": url, **env_extra}
    log_path = log_dir / "server.log"
    with listener, open(log_path, "ab") as log:
        logged_before = log.tell()
        process = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "--bind", f"fd://{listener.fileno()}", "--workers", str(workers),
             "web.asgi:app"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            pass_fds=[listener.fileno()])
    try:
        wait_until_up(process, log_path, logged_before, timeout=60)
    except BaseException:
        process.kill()
        raise
    return process, url


@contextmanager
def hypercorn(database_url: str, log_dir: Path, workers: int = 1, **env_extra: str):
    """start_hypercorn() on `database_url` (its schema created first), stopped gracefully at
    the end; yields its URL."""
    asyncio.run(_create_schema(database_url))
    process, url = start_hypercorn(database_url, log_dir, workers, **env_extra)
    try:
        yield url
    finally:
        process.terminate()  # the master stops its workers gracefully
        process.wait(timeout=30)


# The session's servers share the test database with in-process tests: their workers must
# not look for mail and imports that in-process tests leave in it (and send or run them under
# those tests' feet). What a server's own requests commit still starts at once.
QUIET = {"BACKGROUND_POLL_SECONDS": "86400"}


@pytest.fixture(scope="session")
def live_server_url(database_url, tmp_path_factory):
    """The real app under Hypercorn, on a port of its own, on the test database."""
    with hypercorn(database_url, tmp_path_factory.mktemp("server"), **QUIET) as url:
        yield url


@pytest.fixture(scope="session")
def workers_server_url(database_url, tmp_path_factory):
    """The app as deployed for concurrency: two Hypercorn workers on PostgreSQL (sharing
    nothing but the database); on SQLite the one worker it runs with."""
    workers = 1 if database_url.startswith("sqlite") else 2
    with hypercorn(database_url, tmp_path_factory.mktemp("workers"), workers, **QUIET) as url:
        yield url


@pytest.fixture
def workers_server(workers_server_url, db):
    """workers_server_url, its database freshly emptied for this test."""
    return workers_server_url


@pytest.fixture(scope="session")
def smtp_server():
    """A real SMTP server on loopback for the whole run (tests/loopback_smtp.py)."""
    controller, recorder = loopback_smtp.start()
    yield recorder
    recorder.release.set()
    controller.stop()


@pytest.fixture(scope="session")
def mail_server_url(database_url, tmp_path_factory, smtp_server):
    """The app as deployed with mail: Hypercorn (two workers on PostgreSQL, one on SQLite)
    sending through smtp_server, its BASE_URL its own address."""
    workers = 1 if database_url.startswith("sqlite") else 2
    with hypercorn(database_url, tmp_path_factory.mktemp("mail"), workers, **QUIET,
                   MAIL_URL=f"smtp://127.0.0.1:{smtp_server.port}?starttls=0") as url:
        yield url


@dataclass(frozen=True)
class Served:
    url: str
    mailbox: loopback_smtp.Recorder


@pytest.fixture
def mail_server(mail_server_url, smtp_server, db) -> Served:
    """mail_server_url, its database freshly emptied; smtp_server's script cleared. Messages
    other tests sent may still arrive: a test looks for its own recipients' mail."""
    smtp_server.script.clear()
    return Served(mail_server_url, smtp_server)


@pytest.fixture
def mailed(monkeypatch) -> list:
    """The messages this process's app posts to the outbox during the test, as composed (their
    links' tokens included). In-process tests read links here, not from the outbox table: once
    a test has started mail_server, its senders work on the same database and may send a
    message, blanking its stored copy, before the test reads it."""
    from web.mail import outbox
    messages, post = [], outbox.post

    async def recording(conn, message, **kwargs):
        messages.append(message)
        return await post(conn, message, **kwargs)
    monkeypatch.setattr(outbox, "post", recording)
    return messages


async def _create_schema(url: str) -> None:
    database = Database(url)
    await database.create_schema()
    await database.dispose()


@pytest.fixture
def live_server(live_server_url, db):
    """The live server's URL, its database freshly emptied for this test."""
    return live_server_url


@pytest.fixture(scope="session")
async def browser():
    """Debian's Chromium through Playwright's async API (the sync one would fight
    pytest-asyncio over the event loop)."""
    if not Path(CHROMIUM).exists():
        skip_or_fail(f"Chromium is not installed at {CHROMIUM}", "REQUIRE_BROWSER")
    from playwright.async_api import async_playwright, expect
    # Assertions wait as long as actions (the page fixture's 10 s): a step that hashes two
    # passwords at the server can take longer than expect's 5 s when both cores are busy.
    expect.set_options(timeout=10_000)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield browser
        await browser.close()


class PageWatch:
    """Console errors and CSP violations seen by a page, and full page loads after the first."""

    def __init__(self, page):
        self.page = page
        self.console_errors = []
        page.on("console", lambda msg: msg.type == "error" and self.console_errors.append(msg.text))
        page.on("pageerror", lambda err: self.console_errors.append(str(err)))

    async def mark(self):
        """Sets a marker on window: it survives htmx swaps and dies with a full page load."""
        await self.page.evaluate("window.__noReload = true")

    async def still_marked(self) -> bool:
        return await self.page.evaluate("window.__noReload === true")


@pytest.fixture
async def page(browser):
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(10_000)
    page.watch = PageWatch(page)
    yield page
    await context.close()


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"|"X-CSRF-Token": "([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1) or match.group(2)
