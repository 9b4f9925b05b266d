"""Reliability under stress: concurrent writers, a server killed mid-load, a graceful stop,
and backups taken while writes go on. Nothing acknowledged may be lost, and every change
must have its audit event (and every event its change).

RELIABILITY_SECONDS sets how long the loads run (8 s by default, for CI);
RELIABILITY_REPORT=path appends each test's figures to path as JSON lines.
"""
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SECRET
from reliability import (
    Load, Server, consistency_problems, final_state, report, save_loop, seconds, seed, sign_in,
    sqlite_integrity,
)

pytestmark = pytest.mark.reliability
ROOT = Path(__file__).resolve().parent.parent

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


# ---- 1. concurrency ------------------------------------------------------------------------

async def test_concurrent_saves_lose_nothing_and_each_has_one_audit_event(live_server, db, make_user, database_url):
    admins = [await make_user("Admin") for _ in range(SESSIONS)]
    rows = [(await make_user("Customer"))["id"] for _ in range(ROWS)]
    sessions = await asyncio.gather(*(sign_in(live_server, a["username"]) for a in admins))
    duration = seconds()
    started = time.monotonic()
    load = await run_load(live_server, sessions, rows, duration, CLIENTS)
    elapsed = time.monotonic() - started

    assert load.problems == [], f"5xx or 'database is locked' surfaced: {load.problems[:5]}"
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
    report("concurrency", database_url, clients=CLIENTS, rows=len(rows), sessions=SESSIONS,
           seconds=round(elapsed, 1), requests=load.requests, accepted=load.accepted_count,
           refused_409=sum(load.refused.values()), server_errors=0,
           requests_per_second=round(load.requests / elapsed, 1))


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
    admins, rows = await seed(url, password_hash, admins=2, rows=10)
    server = Server(url, tmp_path / "server.log")
    total, kills, per_round = Load(), 0, max(seconds() / KILLS, 1.5)
    try:
        server.start()
        sessions = [await sign_in(server.url, name) for name in admins]
        for round_ in range(KILLS):
            async def kill_midway(stop, server=server):
                await asyncio.sleep(per_round)
                server.kill()  # while the clients are mid-request
                stop.set()
            load = await run_load(server.url, sessions, rows, per_round, CRASH_CLIENTS,
                                  during=kill_midway, seed_=round_)
            kills += 1
            assert load.problems == [], f"round {round_}: {load.problems[:5]}\n{server.log()[-3000:]}"
            assert load.accepted_count > 0, f"round {round_}: no save was accepted: {load.statuses}"
            total.requests += load.requests
            total.statuses.update(load.statuses)
            total.errors.update(load.errors)
            for row, saves in load.accepted.items():
                total.accepted[row].extend(saves)
            assert (path.parent / (path.name + "-wal")).exists(), "a killed server leaves its WAL behind"
            server.start()  # recovery: the WAL is replayed by the first connection
    finally:
        server.stop()
    assert sqlite_integrity(path) == ["ok"]
    final, events = await final_state(url)
    checked = assert_acknowledged_present(total, events)
    assert consistency_problems(final, events, rows) == []
    report("crash", url, kills=kills, clients=CRASH_CLIENTS, seconds_per_round=round(per_round, 1),
           requests=total.requests, accepted=total.accepted_count, acknowledged_checked=checked,
           refused_409=total.statuses[409], interrupted=sum(total.errors.values()),
           events_in_database=sum(len(v) for v in events.values()), integrity_check="ok")


# ---- 6. graceful shutdown: SIGTERM mid-load ----------------------------------------------------

async def test_sigterm_finishes_in_flight_requests_and_closes_the_database(own_sqlite, tmp_path, password_hash):
    path, url = own_sqlite
    admins, rows = await seed(url, password_hash, admins=2, rows=10)
    server = Server(url, tmp_path / "server.log")
    exit_codes, stop_seconds, in_flight = [], [], set()
    loads = []
    try:
        server.start()
        sessions = [await sign_in(server.url, name) for name in admins]

        async def terminate_midway(stop):
            await asyncio.sleep(max(seconds() / 2, 2))
            started = time.monotonic()
            in_flight.update(loads[0].sent_before(started))
            exit_codes.append(await asyncio.to_thread(server.terminate))
            stop_seconds.append(time.monotonic() - started)
            stop.set()
        load = await run_load(server.url, sessions, rows, 0, CRASH_CLIENTS, during=terminate_midway, into=loads)
        assert exit_codes == [0], f"exit code {exit_codes}\n{server.log()[-3000:]}"
        assert in_flight, "no save was in flight at the SIGTERM"
        unanswered = {key: load.outcome.get(key) for key in in_flight if load.outcome.get(key) not in (200, 409)}
        assert not unanswered, f"saves in flight at the SIGTERM that got no answer: {unanswered}"
        assert stop_seconds[0] < 10 + 2, "the server took longer than its graceful timeout"
        assert load.problems == [], f"{load.problems[:5]}\n{server.log()[-3000:]}"
        # after_serving disposed of the engine: the last connection closed checkpoints and
        # removes the WAL; a killed server leaves it behind.
        assert not (path.parent / (path.name + "-wal")).exists(), "the database was not closed cleanly"
        assert sqlite_integrity(path) == ["ok"]
        server.start()  # and it comes back with everything
        second = await run_load(server.url, sessions, rows, 1.5, 4, seed_=1)
        assert second.problems == [] and second.accepted_count > 0
    finally:
        server.stop()
    final, events = await final_state(url)
    for row, saves in second.accepted.items():
        load.accepted[row].extend(saves)
    checked = assert_acknowledged_present(load, events)
    assert consistency_problems(final, events, rows) == []
    report("graceful", url, clients=CRASH_CLIENTS, requests=load.requests + second.requests,
           accepted=load.accepted_count, acknowledged_checked=checked,
           in_flight_at_sigterm=len(in_flight), in_flight_answered=len(in_flight),
           refused_connections_after_stop=sum(load.errors.values()), stop_seconds=round(stop_seconds[0], 2),
           exit_code=exit_codes[0],
           wal_left=False)


# ---- 5. backups under write load -----------------------------------------------------------

def run_cli(*args, database_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": SECRET, "GATEHOUSE_ENV": "development"}
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


BACKUPS = 2


async def test_backup_under_write_load_is_consistent_and_restores(own_sqlite, tmp_path, password_hash):
    path, url = own_sqlite
    admins, rows = await seed(url, password_hash, admins=2, rows=10)
    server = Server(url, tmp_path / "server.log")
    copies = []
    try:
        server.start()
        sessions = [await sign_in(server.url, name) for name in admins]

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
        load = await run_load(server.url, sessions, rows, 0, 8, during=back_up_meanwhile)
        assert load.problems == [] and load.accepted_count > 0, load.statuses

        # Restoring over the database the server has open is refused.
        refused = run_cli("restore", str(copies[-1][0]), database_url=url)
        assert refused.returncode == 1 and "stop the server first" in refused.stderr, refused.stderr
    finally:
        server.stop()
    for copy, (rows_before, events_before) in copies:
        assert sqlite_integrity(copy) == ["ok"], copy
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
    report("backup", url, backups=len(copies), clients=8, requests=load.requests, accepted=load.accepted_count,
           integrity_check="ok", restored=True)


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
