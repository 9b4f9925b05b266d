"""Reliability under stress: concurrent writers, a server killed mid-load, a graceful stop,
and backups taken while writes go on. Nothing acknowledged may be lost, and every change
must have its audit event (and every event its change).

RELIABILITY_SECONDS sets how long the loads run (4 s by default, for CI);
RELIABILITY_REPORT=path appends each test's figures to path as JSON lines.
"""
import asyncio
import json
import socket
import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from helpers import run_cli
from reliability import (
    Load, Server, consistency_problems, fail_once, final_state, rendered_row, report, save_loop, seconds, seed,
    sign_in, sqlite_integrity,
)
from web.accounts import queries as account_queries

pytestmark = pytest.mark.reliability

CLIENTS = 50
ROWS = 20
SESSIONS = 4  # real logins (argon2): the 50 clients share these


async def run_load(base_url: str, sessions, rows, duration: float, clients: int, *, during=None,
                   seed_: int = 0, into: list | None = None) -> Load:
    """`clients` saving random rows for `duration` s; `during(stop)`, if given, runs alongside
    and ends the load by setting `stop` (e.g. after killing the server). `into` receives the
    Load as it starts, for `during` to look at."""
    load, stop = Load(), asyncio.Event()
    if into is not None:
        into.append(load)
    workers = [asyncio.create_task(save_loop(base_url, sessions[i % len(sessions)], rows, load, stop, i, seed_))
               for i in range(clients)]
    try:
        if during is not None:
            await during(stop)
        else:
            await asyncio.sleep(duration)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    return load


@asynccontextmanager
async def serving(url: str, log: Path, password_hash: str):
    """The app on `url` seeded with two Admins and ten rows, started, each Admin signed in:
    (server, their sessions, the rows). Stopped on the way out, whatever happened."""
    admins, rows = await seed(url, password_hash, admins=2, rows=10)
    server = Server(url, log)
    try:
        server.start()
        yield server, [await sign_in(server.url, name) for name in admins], rows
    finally:
        server.stop()


# ---- 1. concurrency ------------------------------------------------------------------------

async def concurrent_saves(base_url: str, database_url: str, make_user, clients: int, *,
                           duration: float = 0, during=None) -> None:
    """The concurrency test against the server at `base_url`: reports what the load counted,
    then checks it (a run that went wrong is reported as it was, and fails)."""
    admins = [await make_user("Admin") for _ in range(SESSIONS)]
    rows = [(await make_user("Customer"))["id"] for _ in range(ROWS)]
    sessions = await asyncio.gather(*(sign_in(base_url, a["username"]) for a in admins))
    started = time.monotonic()
    load = await run_load(base_url, sessions, rows, duration, clients, during=during)
    elapsed = time.monotonic() - started
    report("concurrency", database_url, rows=len(rows), sessions=len(sessions), seconds=round(elapsed, 1),
           requests_per_second=round(load.requests / elapsed, 1), **load.figures())

    assert load.server_errors == 0, f"5xx or 'database is locked' surfaced: {load.problems[:5]}"
    assert load.problems == [], f"unexpected answers: {load.problems[:5]}"
    assert not load.errors, f"transport errors: {load.errors}"
    assert set(load.statuses) <= {200, 409}, load.statuses
    assert load.accepted_count > 0 and sum(load.refused.values()) > 0, load.statuses
    final, events = await final_state(database_url)
    for row in rows:
        version, username = final[row]
        accepted = load.accepted[row]
        assert version == 1 + len(accepted), f"row {row}: version {version}, {len(accepted)} saves accepted"
        assert len(events[row]) == len(accepted), f"row {row}: {len(events[row])} events, {len(accepted)} saves"
        assert sorted(events[row]) == sorted(name for _, name in accepted)
        if accepted:
            assert username == max(accepted)[1], f"row {row} does not hold the last accepted save"
    assert consistency_problems(final, events, rows) == []


async def test_concurrent_saves_lose_nothing_and_each_has_one_audit_event(live_server, db, make_user, database_url):
    await concurrent_saves(live_server, database_url, make_user, CLIENTS, duration=seconds())


@pytest.fixture
async def app_server(app):
    """The test's own app under Hypercorn in this process, so that a test can break a handler."""
    listener = socket.create_server(("127.0.0.1", 0))  # listening now: early requests wait in its backlog
    url = "http://127.0.0.1:%d" % listener.getsockname()[1]
    config = HypercornConfig()
    config.bind = [f"fd://{listener.detach()}"]
    stopped = asyncio.Event()
    serving = asyncio.create_task(serve(app, config, shutdown_trigger=stopped.wait))
    yield url
    stopped.set()
    await serving


async def test_a_500_during_the_load_is_reported_and_fails_the_concurrency_test(
        app_server, make_user, database_url, monkeypatch, tmp_path):
    """The 5xx figure is counted from the answers: one save that fails at the server is one
    5xx in the report and on the page, and the concurrency test fails."""
    recorded = tmp_path / "reliability.jsonl"
    monkeypatch.setenv("RELIABILITY_REPORT", str(recorded))
    enough = fail_once(monkeypatch, account_queries, "update_if_current", at=5, then=20)

    async def until_enough(stop):
        await asyncio.wait_for(enough.wait(), 60)
        stop.set()
    with pytest.raises(AssertionError, match="5xx or 'database is locked' surfaced"):
        await concurrent_saves(app_server, database_url, make_user, 8, during=until_enough)
    [line] = recorded.read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["server_errors"] == 1
    assert rendered_row(line)["5xx / 'database is locked'"] == "1"


# ---- servers of the tests' own, on a SQLite file ---------------------------------------------

@pytest.fixture
def own_sqlite(tmp_path):
    path = tmp_path / "own.sqlite3"
    return path, f"sqlite+aiosqlite:///{path}"


def assert_acknowledged_present(load: Load, events: dict) -> int:
    """Every save answered 2xx has its event (and so its change: see consistency_problems)."""
    checked = 0
    for row, saves in load.accepted.items():
        present = set(events[row])
        missing = [name for _, name in saves if name not in present]
        assert not missing, f"row {row}: acknowledged saves lost: {missing[:5]}"
        checked += len(saves)
    return checked


# ---- 2. crash safety: SIGKILL mid-load -------------------------------------------------------

KILLS = 3
CRASH_CLIENTS = 16


async def test_acknowledged_writes_survive_sigkill_mid_load(own_sqlite, tmp_path, password_hash):
    path, url = own_sqlite
    total, kills, per_round = Load(), [], max(seconds() / KILLS, 1.5)
    async with serving(url, tmp_path / "server.log", password_hash) as (server, sessions, rows):
        for round_ in range(KILLS):
            loads = []

            async def kill_midway(stop, server=server, loads=loads):
                await asyncio.sleep(per_round)
                # A server just restarted on a busy machine may not have answered a save yet:
                # the kill waits for one, so that every round has acknowledged saves to check.
                deadline = asyncio.get_running_loop().time() + 60
                while not loads[0].accepted_count and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.05)
                server.kill()  # while the clients are mid-request
                kills.append(round_)
                stop.set()
            load = await run_load(server.url, sessions, rows, per_round, CRASH_CLIENTS,
                                  during=kill_midway, seed_=round_, into=loads)
            total.add(load)
            assert load.problems == [], f"round {round_}: {load.problems[:5]}\n{server.log()[-3000:]}"
            assert load.accepted_count > 0, f"round {round_}: no save was accepted: {load.statuses}"
            assert (path.parent / (path.name + "-wal")).exists(), "a killed server leaves its WAL behind"
            server.start()  # recovery: the WAL is replayed by the first connection
    integrity = sqlite_integrity(path)
    assert integrity == ["ok"]
    final, events = await final_state(url)
    checked = assert_acknowledged_present(total, events)
    assert consistency_problems(final, events, rows) == []
    report("crash", url, kills=len(kills), seconds_per_round=round(per_round, 1), acknowledged_checked=checked,
           interrupted=sum(total.errors.values()), events_in_database=sum(len(v) for v in events.values()),
           integrity_check=", ".join(integrity), **total.figures())


# ---- 6. graceful shutdown: SIGTERM mid-load ----------------------------------------------------

async def test_sigterm_finishes_in_flight_requests_and_closes_the_database(own_sqlite, tmp_path, password_hash):
    path, url = own_sqlite
    exit_codes, stop_seconds, in_flight = [], [], set()
    loads = []
    async with serving(url, tmp_path / "server.log", password_hash) as (server, sessions, rows):
        async def terminate_midway(stop):
            await asyncio.sleep(max(seconds() / 2, 2))
            # On a busy machine the clients may still be reading versions: the SIGTERM waits
            # for a save in flight (at most 60 s), so that there is one to see answered.
            deadline = time.monotonic() + 60
            while not (pending := loads[0].sent_before(time.monotonic())) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            in_flight.update(pending)
            started = time.monotonic()
            exit_codes.append(await asyncio.to_thread(server.terminate))
            stop_seconds.append(time.monotonic() - started)
            stop.set()
        load = await run_load(server.url, sessions, rows, 0, CRASH_CLIENTS, during=terminate_midway, into=loads)
        assert exit_codes == [0], f"exit code {exit_codes}\n{server.log()[-3000:]}"
        assert in_flight, "no save was in flight at the SIGTERM"
        answered = {key for key in in_flight if load.outcome.get(key) in (200, 409)}
        unanswered = {key: load.outcome.get(key) for key in in_flight - answered}
        assert not unanswered, f"saves in flight at the SIGTERM that got no answer: {unanswered}"
        assert stop_seconds[0] < 10 + 2, "the server took longer than its graceful timeout"
        assert load.problems == [], f"{load.problems[:5]}\n{server.log()[-3000:]}"
        # after_serving disposed of the engine: the last connection closed checkpoints and
        # removes the WAL; a killed server leaves it behind.
        wal_left = (path.parent / (path.name + "-wal")).exists()
        assert not wal_left, "the database was not closed cleanly"
        assert sqlite_integrity(path) == ["ok"]
        server.start()  # and it comes back with everything
        second = await run_load(server.url, sessions, rows, 1.5, 4, seed_=1)
        assert second.problems == [] and second.accepted_count > 0
    refused_connections = sum(load.errors.values())
    load.add(second)
    final, events = await final_state(url)
    checked = assert_acknowledged_present(load, events)
    assert consistency_problems(final, events, rows) == []
    report("graceful", url, acknowledged_checked=checked, in_flight_at_sigterm=len(in_flight),
           in_flight_answered=len(answered), refused_connections_after_stop=refused_connections,
           stop_seconds=round(stop_seconds[0], 2), exit_code=exit_codes[0], wal_left=wal_left,
           **load.figures())


# ---- 5. backups under write load -----------------------------------------------------------

BACKUPS = 2
BACKUP_CLIENTS = 8


async def test_backup_under_write_load_is_consistent_and_restores(own_sqlite, tmp_path, password_hash):
    path, url = own_sqlite
    copies = []
    async with serving(url, tmp_path / "server.log", password_hash) as (server, sessions, rows):
        async def back_up_meanwhile(stop):
            await asyncio.sleep(0.5)
            for n in range(BACKUPS):
                before = await final_state(url)  # acknowledged by now: must be in the copy
                copy = tmp_path / f"backup-{n}.sqlite3"
                result = await asyncio.to_thread(run_cli, "backup", str(copy), database_url=url)
                assert result.returncode == 0, result.stderr
                copies.append((copy, before))
                await asyncio.sleep(0.3)
            stop.set()
        load = await run_load(server.url, sessions, rows, 0, BACKUP_CLIENTS, during=back_up_meanwhile)
        assert load.problems == [] and load.accepted_count > 0, load.statuses

        # Restoring over the database the server has open is refused.
        refused = run_cli("restore", str(copies[-1][0]), database_url=url)
        assert refused.returncode == 1 and "stop the server first" in refused.stderr, refused.stderr
    integrity = {copy: sqlite_integrity(copy) for copy, _ in copies}
    for copy, (rows_before, events_before) in copies:
        assert integrity[copy] == ["ok"], copy
        copied_rows, copied_events = await final_state(f"sqlite+aiosqlite:///{copy}")
        assert consistency_problems(copied_rows, copied_events, rows) == [], copy
        for row in rows:
            assert copied_events[row][:len(events_before[row])] == events_before[row], f"{copy}: row {row}"
    # Restore the last copy in place of the (stopped) server's database, and serve from it.
    last, _ = copies[-1]
    restored = run_cli("restore", str(last), database_url=url)
    assert restored.returncode == 0, restored.stderr
    assert sqlite_integrity(path) == ["ok"]
    assert await final_state(url) == await final_state(f"sqlite+aiosqlite:///{last}")
    assert (path.parent / (path.name + ".before-restore")).exists()
    server.start()
    try:
        again = await run_load(server.url, sessions, rows, 1, 2)
        assert again.problems == [] and again.accepted_count > 0
    finally:
        server.stop()
    report("backup", url, backups=len(copies), integrity_check="; ".join(", ".join(i) for i in integrity.values()),
           restored=restored.returncode == 0 and again.accepted_count > 0, **load.figures())


def test_backup_of_a_postgres_database_points_to_pg_dump(tmp_path):
    result = run_cli("backup", str(tmp_path / "x"), database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none")
    assert result.returncode == 2
    assert "pg_dump" in result.stderr
    assert not (tmp_path / "x").exists()


def test_restore_refuses_a_file_that_is_not_a_backup(own_sqlite, tmp_path):
    _, url = own_sqlite
    bogus = tmp_path / "bogus.sqlite3"
    bogus.write_bytes(b"not a database" * 100)
    result = run_cli("restore", str(bogus), database_url=url)
    assert result.returncode == 1 and "Restore refused" in result.stderr
