"""The reliability tests' harness: a server process of their own, HTTP clients that sign in
through the login form and save users the way the inline editor does, and the figures the
tests report (RELIABILITY_REPORT=path appends one JSON line per test; see
tests/reliability_report.py, which renders docs/RELIABILITY.md from them)."""
import asyncio
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

import reliability_report
from conftest import PASSWORD, SECRET, csrf_from, wait_until_up
from web.accounts import queries as user_queries
from web.core.db import Database
from web.core.tables import audit_events, users

ROOT = Path(__file__).resolve().parent.parent
VERSION_RE = re.compile(r'name="version" value="(\d+)"')


def seconds(default: float = 4) -> float:
    """How long a load runs: RELIABILITY_SECONDS, else `default` (4 s suits CI: the figures in
    docs/RELIABILITY.md come from a longer run, see tests/reliability_report.py)."""
    return float(os.environ.get("RELIABILITY_SECONDS") or default)


def kind(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgres"


def report(test: str, database_url: str, **figures) -> None:
    """Appends the figures of a test to $RELIABILITY_REPORT, if set."""
    path = os.environ.get("RELIABILITY_REPORT")
    if not path:
        return
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())  # the page says UTC
    line = {"test": test, "database": kind(database_url), "at": at, **figures}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")


# ---- a server process of the test's own -------------------------------------------------

class Server:
    """`python run.py serve` (what an operator runs: Hypercorn, graceful timeout 10 s) on a
    database of the test's own, in its own process group so a kill takes all of it."""

    def __init__(self, database_url: str, log: Path):
        self.database_url, self.log_path = database_url, log
        self.process = None
        self.url = None

    def start(self) -> "Server":
        env = {**os.environ, "DATABASE_URL": self.database_url, "SECRET_KEY": SECRET,
               "GATEHOUSE_ENV": "development"}
        with open(self.log_path, "ab") as log:
            logged_before = log.tell()
            self.process = subprocess.Popen(
                [sys.executable, "run.py", "serve", "--host", "127.0.0.1", "--port", "0"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = wait_until_up(self.process, self.log_path, logged_before, timeout=60)
        return self

    def kill(self) -> None:
        """SIGKILL to every process of the server: no cleanup of any kind."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM, as a process manager stops a service; returns the exit code."""
        os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def seed(database_url: str, password_hash: str, admins: int = 2, rows: int = 10) -> tuple[list, list]:
    """A migrated database with `admins` Admins and `rows` Customers; (admin names, row ids)."""
    db = Database(database_url)
    try:
        await db.create_schema()
        async with db.write() as conn:
            names = [f"admin{n}" for n in range(admins)]
            for name in names:
                await user_queries.create_user(conn, name, f"{name}@example.com", password_hash, "Admin")
            ids = [await user_queries.create_user(conn, f"row{n}", f"customer{n}@example.com", password_hash, "Customer")
                   for n in range(rows)]
    finally:
        await db.dispose()
    return names, ids


# ---- a client that signs in and saves rows ----------------------------------------------

class Refused(Exception):
    pass


@dataclass
class Session:
    cookies: httpx.Cookies
    csrf: str


async def sign_in(base_url: str, username: str) -> Session:
    """One real login through the form (argon2 at the server: do this a handful of times)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        page = await client.get("/login")
        response = await client.post("/login", data={
            "identifier": username, "password": PASSWORD, "csrf_token": csrf_from(page.text)})
        assert response.status_code == 303, (response.status_code, response.text[:500])
        profile = await client.get("/profile")
        assert profile.status_code == 200, profile.status_code
        return Session(httpx.Cookies(client.cookies), csrf_from(profile.text))


def client_for(base_url: str, session: Session, timeout: float = 30) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, cookies=httpx.Cookies(session.cookies), timeout=timeout,
                             headers={"HX-Request": "true", "X-CSRF-Token": session.csrf})


async def read_version(client: httpx.AsyncClient, user_id: int) -> int:
    response = await client.get(f"/users/{user_id}/edit")
    if response.status_code != 200:
        raise Refused(f"GET /users/{user_id}/edit answered {response.status_code}")
    return int(VERSION_RE.search(response.text).group(1))


async def save(client: httpx.AsyncClient, user_id: int, version: int, username: str) -> httpx.Response:
    """The inline editor's save, as an Admin: every field sent, the username changed."""
    return await client.post(f"/users/{user_id}", data={
        "username": username, "email": f"row{user_id}@example.com", "role": "Customer", "active": "1",
        "version": str(version), "back": "/users"})


@dataclass
class Load:
    """What a write load did: answers by status, saves acknowledged (2xx) and refused (409)."""
    statuses: Counter = field(default_factory=Counter)
    accepted: dict = field(default_factory=lambda: defaultdict(list))  # row -> [(version sent, username)]
    refused: Counter = field(default_factory=Counter)
    problems: list = field(default_factory=list)  # 5xx, 'database is locked', unexpected answers
    server_errors: int = 0  # answers that were a 5xx or said 'database is locked'
    errors: Counter = field(default_factory=Counter)  # transport errors (a killed server)
    requests: int = 0
    clients: set = field(default_factory=set)  # the workers that sent a save
    in_flight: dict = field(default_factory=dict)  # save -> when it was sent, until answered
    outcome: dict = field(default_factory=dict)  # save -> status code, or the error's name

    def sent_before(self, moment: float, margin: float = 0.02) -> set:
        """The saves still awaiting their answer at `moment`, sent at least `margin` s before."""
        return {key for key, sent in self.in_flight.items() if sent <= moment - margin}

    @property
    def accepted_count(self) -> int:
        return sum(len(v) for v in self.accepted.values())

    def add(self, other: "Load") -> None:
        """Counts another load's answers in this one (a test of several loads reports their sum)."""
        self.statuses.update(other.statuses)
        for row, saves in other.accepted.items():
            self.accepted[row].extend(saves)
        self.refused.update(other.refused)
        self.problems.extend(other.problems)
        self.server_errors += other.server_errors
        self.errors.update(other.errors)
        self.requests += other.requests
        self.clients |= other.clients

    def figures(self) -> dict:
        """What the reports say of a load, each counted from the answers it received."""
        return {"clients": len(self.clients), "requests": self.requests, "accepted": self.accepted_count,
                "refused_409": sum(self.refused.values()), "server_errors": self.server_errors}


async def save_loop(base_url: str, session: Session, rows: list[int], load: Load, stop: asyncio.Event,
                    worker: int, seed_: int = 0) -> None:
    """Saves random rows until `stop`, with the version last seen; a 409 makes it read again."""
    rng = random.Random(seed_ * 1000 + worker)
    known: dict[int, int] = {}
    n = 0
    async with client_for(base_url, session) as client:
        while not stop.is_set():
            row = rng.choice(rows)
            try:
                if row not in known:
                    load.requests += 1
                    known[row] = await read_version(client, row)
                n += 1
                username = f"r{row}w{worker}n{n}"[:32]
                load.requests += 1
                key = (worker, n)
                load.clients.add(worker)
                load.in_flight[key] = time.monotonic()
                try:
                    response = await save(client, row, known[row], username)
                    load.outcome[key] = response.status_code
                except httpx.TransportError as error:
                    load.outcome[key] = type(error).__name__
                    raise
                finally:
                    load.in_flight.pop(key, None)
            except (httpx.TransportError, Refused) as error:
                load.errors[type(error).__name__] += 1
                known.pop(row, None)
                if stop.is_set():
                    return
                await asyncio.sleep(0.05)
                continue
            load.statuses[response.status_code] += 1
            if response.status_code >= 500 or "database is locked" in response.text:
                load.server_errors += 1
                load.problems.append((response.status_code, response.text[:300]))
            elif response.status_code not in (200, 409):
                load.problems.append((response.status_code, response.text[:300]))
            if response.status_code == 200:
                load.accepted[row].append((known[row], username))
                known[row] += 1
            elif response.status_code == 409:
                load.refused[row] += 1
                match = VERSION_RE.search(response.text)
                if match:  # the conflict form carries the version that won
                    known[row] = int(match.group(1))
                else:
                    known.pop(row, None)
            else:
                known.pop(row, None)


# ---- what the database holds afterwards ---------------------------------------------------

async def final_state(database_url: str) -> tuple[dict, dict]:
    """({row id: (version, username)}, {row id: [new usernames of its 'update' events, in order]})."""
    db = Database(database_url)
    try:
        async with db.read() as conn:
            rows = {r.id: (r.version, r.username) for r in
                    (await conn.execute(sa.select(users.c.id, users.c.version, users.c.username))).all()}
            events = defaultdict(list)
            for target, changes in (await conn.execute(
                    sa.select(audit_events.c.target_id, audit_events.c.changes)
                    .where(audit_events.c.action == "update").order_by(audit_events.c.id))).all():
                events[target].append(changes["username"][1])
    finally:
        await db.dispose()
    return rows, events


def consistency_problems(rows: dict, events: dict, row_ids: list[int]) -> list[str]:
    """Every change has its event and every event its change: version == 1 + events, and
    the row holds the value of its last event."""
    problems = []
    for row in row_ids:
        version, username = rows[row]
        if version != 1 + len(events[row]):
            problems.append(f"row {row}: version {version} but {len(events[row])} update events")
        if events[row] and events[row][-1] != username:
            problems.append(f"row {row}: holds {username!r}, its last event says {events[row][-1]!r}")
    return problems


def sqlite_integrity(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


# ---- proof that the reports count what happened ---------------------------------------------

def fail_once(monkeypatch, module, name: str, at: int = 1, then: int = 0) -> asyncio.Event:
    """Makes the `at`-th call of the async `module.name` raise (a 500 from the server); the
    event is set once `then` calls after it have returned."""
    real, calls, returned, enough = getattr(module, name), [], [], asyncio.Event()

    async def failing(*args, **kwargs):
        calls.append(None)
        if len(calls) == at:
            raise RuntimeError("injected failure")
        result = await real(*args, **kwargs)
        returned.append(None)
        if len(returned) >= at - 1 + then:
            enough.set()
        return result
    monkeypatch.setattr(module, name, failing)
    return enough


def rendered_row(line: str) -> dict:
    """{column title: cell} of the row docs/RELIABILITY.md shows for one recorded line."""
    entry = json.loads(line)
    header = []
    for text in reliability_report.render(reliability_report.latest([line])).splitlines():
        cells = [cell.strip() for cell in text.strip().strip("|").split("|")]
        if text.startswith("| database |"):
            header = cells
        elif text.startswith(f"| {entry['database']} |"):
            return dict(zip(header, cells))
    raise AssertionError(f"no row for {line}")
