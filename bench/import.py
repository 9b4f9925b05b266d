#!/usr/bin/env python3
"""What importing users from CSV costs, and what the users table feels while it runs.

    .venv/bin/python bench/import.py                          # 10,000 rows, 10,000 users, SQLite, 1 worker
    .venv/bin/python bench/import.py --runs 3                 # three whole runs, each figure's median
    .venv/bin/python bench/import.py --rows 2000 --users 2000 --idle-seconds 2   # the plumbing only
    .venv/bin/python bench/import.py --workers 2 --database-url postgresql+asyncpg://…/empty_db

It builds the database as bench/run.py does (`run.py demo-data --users N`, an Admin with
`run.py create-admin`; --database-url names an EMPTY database instead, vacuumed once
loaded), starts `run.py serve`, logs in as the Admin over HTTP and uploads a CSV of --rows
new users, 1% of them with a problem the preview finds (a bad address, an unknown role, a
name an account has, a name used earlier in the file). It measures the upload (the file
read, mapped and every row checked, in the request), the preview's first page and one row
fixed inline (every row is checked again); then starts the import, skipping the other rows
with problems, and polls its progress once a second, as the page does, until it is done. Two
probes run from --idle-seconds before the upload to the end: a client loading the users
table (the first page, as htmx asks for it) every --poll-interval seconds, and an inline
save of a Customer every --save-interval seconds (a write: on SQLite it waits for the
upload's or a batch's transaction to commit); their latencies are reported per phase (idle;
preview, from the upload to the start; import). The import's time is the server's own (the
job's finished_at minus its import_started event); peak RSS is VmHWM of Hypercorn's
worker(s), reset before the upload (the login's argon2 hash would otherwise be the peak). It
prints a table and writes bench/results/<timestamp>-import.json (every run with every
probe's sample, and the medians). See docs/PERFORMANCE.md, "CSV import".
"""
import argparse
import asyncio
import itertools
import importlib.util
import json
import math
import os
import platform
import random
import re
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))


def _bench_run():
    """bench/run.py's helpers (the server, the HTTP client, the login), loaded by path: the
    repository's root has a run.py of its own."""
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _bench_run()
log = bench.log

PROBLEM_EVERY = 100  # 1% of the rows
FIXED_LINE = PROBLEM_EVERY // 2 + 2  # the first row with a problem (a bad address), fixed inline
# A hash in bcrypt's format: imported as is, checked at the user's first login.
BCRYPT = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"
PROGRESS_EVERY = 1.0  # seconds, as the import's page polls
PHASES = ("idle", "preview", "import")  # preview: the upload, the preview's first page, one fix


# ---- the file ----------------------------------------------------------------------------

def people_csv(rows: int, taken: list[str]) -> tuple[bytes, int]:
    """`rows` new users (a few Managers, some inactive, some with a bcrypt hash instead of an
    invitation); every PROBLEM_EVERY-th row has one problem, `taken` giving names accounts
    already have. Returns the file and how many rows have a problem."""
    lines, bad = ["username,email,role,active,password_hash"], 0
    for n in range(rows):
        name, email = f"imported{n}", f"imported{n}@example.org"
        role = "Manager" if n % 50 == 7 else "Customer"
        active = "no" if n % 20 == 3 else "yes"
        hashed = BCRYPT if n % 25 == 11 else ""
        if n % PROBLEM_EVERY == PROBLEM_EVERY // 2:
            bad += 1
            kind = (n // PROBLEM_EVERY) % 4
            if kind == 0:
                email = f"imported{n}.example.org"
            elif kind == 1:
                role = "Wizard"
            elif kind == 2:
                name = taken[n // PROBLEM_EVERY % len(taken)]
            else:
                name = f"imported{n - 1}"
        lines.append(",".join((name, email, role, active, hashed)))
    return ("\n".join(lines) + "\n").encode(), bad


def multipart(fields: dict, file_field: str, filename: str, content: bytes) -> tuple[str, bytes]:
    """A multipart/form-data body as a browser sends a form with a file."""
    boundary = "----gatehouse" + secrets.token_hex(12)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
                 f'Content-Type: text/csv\r\n\r\n'.encode() + content + b"\r\n")
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


def send(port: int, method: str, path: str, headers: dict, body: bytes = b""):
    """bench/run.py's HTTP request with a body of any kind (its http() sends forms only)."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(bench.request_bytes(method, port, path, headers, body))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return bench.Reply(b"".join(chunks))


# ---- the database --------------------------------------------------------------------------

async def pick(database_url: str) -> dict:
    """Names accounts already have (for the file's problems) and Customers to save."""
    from sqlalchemy import func, select
    from web.core.db import Database
    from web.core.tables import users
    db = Database(database_url)
    try:
        async with db.read() as conn:
            taken = list((await conn.execute(select(users.c.username).order_by(users.c.id).limit(50))).scalars())
            customers = (await conn.execute(
                select(users.c.id, users.c.version).where(users.c.role == "Customer", users.c.active.is_(True),
                                                          users.c.deleted_at.is_(None))
                .order_by(users.c.id.desc()).limit(50))).all()
            total = (await conn.execute(select(func.count()).select_from(users))).scalar_one()
    finally:
        await db.dispose()
    return {"taken": taken, "save": [(row.id, row.version) for row in customers], "users": total}


async def settle(database_url: str) -> None:
    """VACUUM ANALYZE users, as autovacuum does a minute or so after the demo users' load.
    Until then the trigram indexes' pending lists hold every new user, and PostgreSQL plans
    the upload's duplicate check (lower(username) IN 500 names) on one of them: about 10 s per
    500 names instead of 10 ms (docs/PERFORMANCE.md). Without this the upload's figure would
    depend on when autovacuum ran."""
    from sqlalchemy.ext.asyncio import create_async_engine
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("VACUUM ANALYZE users")
    finally:
        await engine.dispose()


async def outcome(database_url: str, job_id: int) -> dict:
    """The job as the server left it, and how long it ran by the server's clock."""
    from sqlalchemy import func, select
    from web.core.db import Database
    from web.core.tables import audit_events, imports, users
    db = Database(database_url)
    try:
        async with db.read() as conn:
            job = (await conn.execute(select(imports).where(imports.c.id == job_id))).one()
            started = (await conn.execute(select(audit_events.c.occurred_at).where(
                audit_events.c.action == "import_started", audit_events.c.target_id == job_id))).scalar_one()
            users_now = (await conn.execute(select(func.count()).select_from(users))).scalar_one()
    finally:
        await db.dispose()
    return {"state": job.state, "created": job.created, "skipped": job.skipped, "failed": job.failed,
            "seconds": (job.finished_at - started).total_seconds(), "users_after": users_now}


# ---- the probes ----------------------------------------------------------------------------

class Probes:
    """The users table loaded about every `poll` seconds and an inline save about every `save`
    seconds, each request started on time whether or not the one before was answered (people
    do not wait for each other, and arrivals then fall anywhere in a batch); latencies kept
    per phase (PHASES) in which a request began."""

    def __init__(self, port: int, session: dict, rows: list[tuple[int, int]], poll: float, save: float):
        self.port, self.session, self.poll, self.save_every = port, session, poll, save
        self.versions = dict(rows)
        self.rows = itertools.cycle(self.versions)
        self.busy: set[int] = set()  # rows whose save is under way: the next save needs its answer
        self.phase = "idle"
        self.failures = {"table": 0, "save": 0}
        self.samples = {"table": [], "save": []}  # (seconds since the probes began, phase, ms)
        self.begun = time.perf_counter()
        self.stopping = asyncio.Event()

    async def timed(self, request, kind: str) -> None:
        begun, phase = time.perf_counter(), self.phase
        try:
            ok = await request()
        except OSError:
            ok = False
        if ok:
            self.samples[kind].append((round(begun - self.begun, 3), phase,
                                       round((time.perf_counter() - begun) * 1000, 1)))
        else:
            self.failures[kind] += 1

    async def every(self, seconds: float, request, kind: str) -> None:
        jitter = random.Random(kind)
        under_way = set()
        while not self.stopping.is_set():
            task = asyncio.create_task(self.timed(request, kind))
            under_way.add(task)
            task.add_done_callback(under_way.discard)
            try:
                await asyncio.wait_for(self.stopping.wait(), seconds * jitter.uniform(0.5, 1.5))
            except TimeoutError:
                pass
        await asyncio.gather(*under_way)

    async def table(self) -> bool:
        reply = await bench.http_async(self.port, "GET", "/users", {
            "Cookie": self.session["cookie"], "HX-Request": "true", "HX-Target": "users-table",
            "Accept-Encoding": "gzip, deflate, br"})
        return reply.status == 200

    async def save(self) -> bool:
        """Renames a Customer to save<id>v<version>: a real change each time."""
        for _ in range(len(self.versions)):
            row_id = next(self.rows)
            if row_id not in self.busy:
                break
        else:
            return False  # every row has a save under way: counted as a failure
        self.busy.add(row_id)
        try:
            return await self.save_row(row_id)
        finally:
            self.busy.discard(row_id)

    async def save_row(self, row_id: int) -> bool:
        version = self.versions[row_id]
        reply = await bench.http_async(self.port, "POST", f"/users/{row_id}", {
            "Cookie": self.session["cookie"], "HX-Request": "true", "HX-Target": f"user-{row_id}",
            "X-CSRF-Token": self.session["csrf"]}, {
            "csrf_token": self.session["csrf"], "version": version, "username": f"save{row_id}v{version + 1}",
            "email": f"save{row_id}@example.com", "role": "Customer", "active": "1", "back": "/users"})
        if reply.status == 200:
            self.versions[row_id] = version + 1
            return True
        if found := re.search(r'name="version" value="(\d+)"', reply.text):
            self.versions[row_id] = int(found.group(1))
        return False

    def start(self) -> list[asyncio.Task]:
        return [asyncio.create_task(self.every(self.poll, self.table, "table")),
                asyncio.create_task(self.every(self.save_every, self.save, "save"))]

    def summary(self) -> dict:
        return {kind: {phase: percentiles([ms for _, when, ms in samples if when == phase]) for phase in PHASES}
                for kind, samples in self.samples.items()} | {"failures": self.failures, "samples": self.samples}


def percentiles(ms: list[float]) -> dict:
    ordered = sorted(ms)

    def pct(p):
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0
    return {"n": len(ordered), "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0)}


def restart_peak(pid: int) -> int:
    """Resets the process's VmHWM to its present RSS (Linux: clear_refs 5), which it returns."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return bench.peak_rss_kb(pid)


# ---- a run ---------------------------------------------------------------------------------

async def measure(args, server, session: dict, picked: dict, database_url: str) -> dict:
    port = server.port
    probes = Probes(port, session, picked["save"], args.poll_interval, args.save_interval)
    tasks = probes.start()
    try:
        await asyncio.sleep(args.idle_seconds)
        # The login's argon2 hash (64 MiB) set the peak so far: the import's own starts here.
        peak_with_login = {str(pid): bench.peak_rss_kb(pid) for pid in server.workers()}
        rss_before = {str(pid): restart_peak(pid) for pid in server.workers()}
        content, bad = people_csv(args.rows, picked["taken"])
        probes.phase = "preview"
        content_type, body = multipart({"csrf_token": session["csrf"]}, "file", "people.csv", content)
        begun = time.perf_counter()
        uploaded = await asyncio.to_thread(send, port, "POST", "/users/import", {
            "Cookie": session["cookie"], "Content-Type": content_type}, body)
        upload_s = time.perf_counter() - begun
        if uploaded.status != 303:
            raise SystemExit(f"the upload answered {uploaded.status}: {uploaded.text[:300]}")
        job_id = int(uploaded.header("location").rsplit("/", 1)[1])
        begun = time.perf_counter()
        preview = await bench.http_async(port, "GET", f"/users/import/{job_id}", {"Cookie": session["cookie"]})
        preview_s = time.perf_counter() - begun
        ready = f"{args.rows} rows: {args.rows - bad} ready, {bad} with problems"
        if preview.status != 200 or ready not in preview.text:
            raise SystemExit(f"the preview does not say {ready!r} ({preview.status})")
        begun = time.perf_counter()
        fixed = await bench.http_async(port, "POST", f"/users/import/{job_id}/rows/{FIXED_LINE}", {
            "Cookie": session["cookie"], "HX-Request": "true", "HX-Target": "import-preview"}, {
            "csrf_token": session["csrf"], "username": f"imported{FIXED_LINE - 2}",
            "email": f"imported{FIXED_LINE - 2}@example.org", "role": "Customer", "active": "yes"})
        fix_s = time.perf_counter() - begun
        skipped = bad - 1
        ready = f"{args.rows} rows: {args.rows - skipped} ready, {skipped} with problems"
        if fixed.status != 200 or ready not in fixed.text:
            raise SystemExit(f"the fixed row's preview does not say {ready!r} ({fixed.status})")

        probes.phase = "import"
        started = await bench.http_async(port, "POST", f"/users/import/{job_id}/start", {
            "Cookie": session["cookie"]}, {"csrf_token": session["csrf"], "skip_bad": "on"})
        if started.status != 303:
            raise SystemExit(f"starting the import answered {started.status}")
        polls = 0
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            polls += 1
            progress = await bench.http_async(port, "GET", f"/users/import/{job_id}/progress", {
                "Cookie": session["cookie"], "HX-Request": "true", "HX-Target": "import-status"})
            if "Import finished" in progress.text or "Import cancelled" in progress.text:
                break
    finally:
        probes.stopping.set()
        await asyncio.gather(*tasks)
    rss = {str(pid): bench.peak_rss_kb(pid) for pid in server.workers()}
    result = await outcome(database_url, job_id)
    expected = {"state": "done", "created": args.rows - skipped, "skipped": skipped, "failed": 0,
                "users_after": picked["users"] + args.rows - skipped}
    if {key: result[key] for key in expected} != expected:
        raise SystemExit(f"the import ended as {result}, not as {expected}")
    batches = math.ceil((args.rows - skipped) / args.batch)
    return {
        "rows": args.rows, "with_problems": bad, "skipped": skipped, "file_bytes": len(content),
        "upload_s": upload_s, "preview_s": preview_s, "fix_s": fix_s,
        "import_s": result["seconds"], "rows_per_s": result["created"] / result["seconds"],
        "batches": batches, "batch_ms": result["seconds"] / batches * 1000, "progress_polls": polls,
        "probes": probes.summary(), "peak_rss_kb": rss, "rss_kb_before_import": rss_before,
        "peak_rss_kb_with_login": peak_with_login,
    }


def run_once(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-import-"))
    database_url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'bench.sqlite3'}"
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": secrets.token_urlsafe(48),
           "GATEHOUSE_ENV": "development"}
    if args.database_url:
        asyncio.run(bench.require_empty(database_url))
    log(f"Creating {args.users:,} demo users ({'SQLite in ' + str(workdir) if not args.database_url else 'given database'})…")
    bench.run_cli(env, "demo-data", "--users", str(args.users))
    admin_password = secrets.token_urlsafe(24)
    bench.run_cli(env, "create-admin", "--username", bench.ADMIN, "--email", f"{bench.ADMIN}@example.com",
                  stdin=admin_password + "\n")
    if args.database_url:
        asyncio.run(settle(database_url))
    picked = asyncio.run(pick(database_url))
    load_before = os.getloadavg()[0]  # what else the machine was doing: the figures depend on it
    server = bench.Server(env, 0, args.workers, workdir / "server.log")
    try:
        server.wait_until_up()
        session = bench.log_in(server.port, bench.ADMIN, admin_password)
        log(f"Importing {args.rows:,} rows into {picked['users']:,} users, probes every {args.poll_interval} s "
            f"(table) and {args.save_interval} s (save)…")
        result = asyncio.run(measure(args, server, session, picked, database_url))
    except BaseException:
        log(f"Stopped early: the database and the server log are in {workdir}")
        raise
    finally:
        server.stop()
    result["when"] = datetime.now().isoformat(timespec="seconds")
    result["users"] = picked["users"]
    result["load_average"] = {"before": load_before, "after": os.getloadavg()[0]}
    if not args.database_url:
        shutil.rmtree(workdir, ignore_errors=True)
    print(table([result], args))
    return result


# ---- results -------------------------------------------------------------------------------

FIGURES = ("upload_s", "preview_s", "fix_s", "import_s", "rows_per_s", "batch_ms")


def median_of(runs: list[dict]) -> dict:
    """Each figure's median over the runs (failed probe requests summed)."""
    result = {key: statistics.median(r[key] for r in runs) for key in FIGURES}
    result["probes"] = {kind: {phase: {key: statistics.median(r["probes"][kind][phase][key] for r in runs)
                                       for key in ("n", "p50_ms", "p99_ms", "max_ms")}
                               for phase in PHASES} for kind in ("table", "save")}
    result["probes"]["failures"] = {kind: sum(r["probes"]["failures"][kind] for r in runs) for kind in ("table", "save")}
    for key in ("peak_rss_kb", "rss_kb_before_import", "peak_rss_kb_with_login"):
        result[key] = {"median": statistics.median(max(r[key].values()) for r in runs)}
    for key in ("rows", "with_problems", "skipped", "file_bytes", "batches", "users"):
        result[key] = runs[0][key]
    result["when"] = f"median of {len(runs)} runs, {runs[0]['when']} to {runs[-1]['when']}"
    return result


def table(runs: list[dict], args) -> str:
    r = runs[0] if len(runs) == 1 else median_of(runs)
    p = r["probes"]
    load = ", ".join(f"{run['load_average']['before']:.1f}" for run in runs)
    lines = [f"\nGatehouse CSV import {r['when']}: {r['rows']:,} rows ({r['with_problems']} with problems: one "
             f"fixed, {r['skipped']} skipped; {r['file_bytes'] / 1024:.0f} KB) into {r['users']:,} users, "
             f"{'SQLite' if not args.database_url else 'given database'}, {args.workers} worker(s), "
             f"batches of {args.batch}; load average before: {load}",
             f"{'upload (read, mapped, every row checked)':48} {r['upload_s']:8.2f} s",
             f"{'preview, first page':48} {r['preview_s'] * 1000:8.0f} ms",
             f"{'one row fixed inline (every row checked again)':48} {r['fix_s']:8.2f} s",
             f"{'import, start to done':48} {r['import_s']:8.2f} s  {r['rows_per_s']:,.0f} rows created/s, "
             f"{r['batch_ms']:.0f} ms per batch of {args.batch}",
             f"{'':48} {'n':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"]
    for kind, title in (("table", "users table (/users, first page)"), ("save", "inline save")):
        for phase, when in zip(PHASES, ("idle", "upload to start", "during the import")):
            d = p[kind][phase]
            lines.append(f"{title + ', ' + when:48} {d['n']:8.0f} "
                         f"{d['p50_ms']:8.1f} {d['p99_ms']:8.1f} {d['max_ms']:8.1f}")
    if any(p["failures"].values()):
        lines.append(f"failed probe requests: {p['failures']}")
    lines.append(f"peak RSS (VmHWM) of the worker(s) from the upload to the end: {megabytes(r['peak_rss_kb'])} "
                 f"(RSS before the upload: {megabytes(r['rss_kb_before_import'])}; peak with the Admin's login: "
                 f"{megabytes(r['peak_rss_kb_with_login'])})")
    return "\n".join(lines)


def megabytes(kb_by_worker: dict) -> str:
    return ", ".join(f"{kb / 1024:.0f} MB" for kb in kb_by_worker.values())


def machine() -> dict:
    try:
        return bench.machine()
    except FileNotFoundError:  # bench/run.py's description names wrk's version; this benchmark needs no wrk
        return {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench/import.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=10_000, help="rows in the CSV file (default 10,000)")
    p.add_argument("--users", type=int, default=10_000, help="demo users in the fresh database (default 10,000)")
    p.add_argument("--workers", type=int, default=1, help="Hypercorn workers (default 1; use PostgreSQL for more)")
    p.add_argument("--database-url", help="an EMPTY database to use instead of a fresh SQLite file")
    p.add_argument("--runs", type=int, default=1, help="whole runs (fresh database and server each); the "
                                                        "table shows each figure's median (default 1)")
    p.add_argument("--poll-interval", type=float, default=0.1, help="seconds between loads of the users table")
    p.add_argument("--save-interval", type=float, default=0.5, help="seconds between inline saves")
    p.add_argument("--idle-seconds", type=float, default=10, help="probes before the upload, for comparison")
    p.add_argument("--out", help="JSON results file (default bench/results/<timestamp>-import.json)")
    args = p.parse_args(argv)
    if args.runs < 1 or (args.runs > 1 and args.database_url):
        p.error("--runs takes 1 or more, and more than 1 only with the fresh SQLite database of each run")
    from web.imports.runner import BATCH
    args.batch = BATCH
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    runs = [run_once(args) for _ in range(args.runs)]
    if args.runs > 1:
        print(table(runs, args))
    settings = {"rows": args.rows, "users": args.users, "workers": args.workers, "batch": args.batch,
                "database": "sqlite" if not args.database_url else "given", "poll_interval_s": args.poll_interval,
                "save_interval_s": args.save_interval, "idle_s": args.idle_seconds}
    results = {"when": runs[0]["when"], "command": " ".join(sys.argv), "machine": machine(),
               "settings": settings, "runs": runs, "median": median_of(runs)}
    path = Path(args.out) if args.out else BENCH / "results" / f"{datetime.now():%Y%m%d-%H%M%S}-import.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    log(f"Results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
