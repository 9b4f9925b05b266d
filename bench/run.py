#!/usr/bin/env python3
"""Gatehouse's benchmark: the real server on a fresh database, driven by wrk over loopback.

    .venv/bin/python bench/run.py                       # 100,000 users, SQLite, 1 worker
    .venv/bin/python bench/run.py --workers 2 --database-url postgresql+asyncpg://…/empty_db
    .venv/bin/python bench/run.py --users 2000 --duration 2 --smoke   # the plumbing only
    .venv/bin/python bench/run.py --runs 3                # the median of three whole runs
    .venv/bin/python bench/run.py --peers --runs 3        # the whole /users page against SQLAdmin and
                                                          # a Flask-Security-Too app (bench/peers/)
    .venv/bin/python bench/run.py --scale                 # every view at 1,000,000 users and 5,000,000
                                                          # audit events, both databases (bench/scale.py;
                                                          # its options follow: --scale --help)

It creates the database with `run.py demo-data` and an admin with `run.py create-admin`,
starts `run.py serve` with GATEHOUSE_BENCH=1 (which adds the ceiling endpoint), logs in,
runs each scenario with wrk (bench/*.lua carry the cookie and the CSRF header), prints a
table, writes bench/results/<timestamp>.json, and stops the server. See docs/PERFORMANCE.md.
With --peers it serves one 10,000-user SQLite file with Gatehouse and then with each peer app
(their own venvs, bench/peers/venvs.py), checks that all list the same 50 usernames first,
and drives each one's whole users page with the same wrk settings.
"""
import argparse
import asyncio
import copy
import gzip
import importlib.util
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from datetime import datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Callable, NamedTuple
from urllib.parse import urlencode

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS = BENCH / "peers"
sys.path.insert(0, str(ROOT))

ADMIN = "benchadmin"
# --peers: sorts after the demo users, so never among the first 50 that the pages compare (their
# headers name the viewer, which listed_usernames leaves out).
PEERS_ADMIN = "zz.benchadmin"
# Share of the ceiling's requests/s, or an absolute limit (issue 15's; the search's is for
# 1,000,000 users: `--users 1000000`).
TARGETS = {
    "table_deep": 0.20, "search": 0.10, "save": 0.10,
    "storm_p99_ratio": 3.0, "rss_mb": 150, "first_load_kb": 60,
}
SEARCH = "ada"
# Gatehouse's requests/s over each peer's, for the whole users page (issue 15).
PEER_TARGETS = {"sqladmin": 10.0, "flask-security": 6.0}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- a tiny HTTP/1.1 client that also counts the bytes on the wire ----------------------

class Reply:
    def __init__(self, raw: bytes):
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
        if self.header("transfer-encoding") == "chunked":
            body = dechunk(body)
        self.wire_bytes = len(raw)
        self.raw_body = body
        self.body = gzip.decompress(body) if self.header("content-encoding") == "gzip" else body

    def header(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return default

    def cookies(self) -> dict:
        jar = {}
        for key, value in self.headers:
            if key.lower() == "set-cookie":
                for name, morsel in SimpleCookie(value).items():
                    jar[name] = morsel.value
        return jar

    @property
    def text(self) -> str:
        return self.body.decode()


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return bytes(out)


def request_bytes(method: str, port: int, path: str, headers: dict, body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items())]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def http(port: int, method: str, path: str, headers: dict | None = None, form: dict | None = None) -> Reply:
    headers = dict(headers or {})
    body = b""
    if form is not None:
        body = urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request_bytes(method, port, path, headers, body))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return Reply(b"".join(chunks))


async def http_async(port: int, method: str, path: str, headers: dict, form: dict | None = None) -> Reply:
    headers = dict(headers)
    body = b""
    if form is not None:
        body = urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_bytes(method, port, path, headers, body))
        await writer.drain()
        return Reply(await reader.read())
    finally:
        writer.close()


def cookie_header(jar: dict) -> str:
    return "; ".join(f"{k}={v}" for k, v in jar.items())


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
FORM_CSRF_RE = re.compile(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"')  # WTForms' order


# ---- the database, the server, the session ------------------------------------------------

def run_cli(env: dict, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env, input=stdin,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"run.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stderr


async def pick_rows(database_url: str, save_rows: int, storm_users: int) -> dict:
    """Rows for the save scenario, accounts for the login storm, and a deep page's cursor."""
    from sqlalchemy import func, select
    from web.core.db import Database
    from web.core.tables import users
    from web.users.queries import SORTS, TableState, encode_cursor
    db = Database(database_url)
    try:
        async with db.read() as conn:
            customers = (await conn.execute(
                select(users.c.id, users.c.username, users.c.version)
                .where(users.c.role == "Customer", users.c.active.is_(True), users.c.deleted_at.is_(None))
                .order_by(users.c.id))).all()
            total = (await conn.execute(select(func.count()).select_from(users))).scalar_one()
            deep_index = int(total * 0.8)
            sort = SORTS["username"]
            before_deep = (await conn.execute(
                select(users.c.id, users.c.username).where(users.c.deleted_at.is_(None))
                .order_by(sort.key).offset(deep_index - 1).limit(1))).first()
    finally:
        await db.dispose()
    storm, rest = customers[:storm_users], customers[storm_users:]
    step = max(1, len(rest) // save_rows)
    page = deep_index // 50 + 1
    return {
        "storm": [row.username for row in storm],
        "save": [(row.id, row.version) for row in rest[::step][:save_rows]],
        "deep_url": TableState(after=encode_cursor(sort, before_deep), page=page).url(),
        "deep_page": page,
        "total": total,
    }


# Hypercorn, uvicorn and gunicorn each log where they listen.
LISTENING = re.compile(rb"(?:Running on|running on|Listening at:) http://127\.0\.0\.1:(\d+) ")


class Server:
    """A server in its own process group: `run.py serve` (which execs Hypercorn), or a peer app.
    With port 0 the system gives it a free port, which it logs: nothing else can take it in
    between, as it could when a port was found free first and bound later. It is up when `ready`
    answers 200."""

    def __init__(self, command: list[str], env: dict, log_path: Path, cwd: Path = ROOT, ready: str = "/healthz"):
        self.port = None  # known once the server says where it listens (port 0: a free one)
        self.ready = ready
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    @classmethod
    def gatehouse(cls, env: dict, port: int, workers: int, log_path: Path) -> "Server":
        return cls([sys.executable, "run.py", "serve", "--host", "127.0.0.1", "--port", str(port),
                    "--workers", str(workers)], env, log_path)

    def wait_until_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with {self.process.returncode}; see {self.log.name}")
            if self.port is None and (found := LISTENING.search(Path(self.log.name).read_bytes())):
                self.port = int(found.group(1))
            try:
                if self.port and http(self.port, "GET", self.ready).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit("the server did not come up in time")

    def workers(self) -> list[int]:
        """Hypercorn's worker processes: the children of the master (run.py exec'd into it)."""
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid and b"multiprocessing.spawn" in (stat.parent / "cmdline").read_bytes():
                children.append(int(stat.parent.name))  # not the resource tracker
        return children or [self.process.pid]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:  # anything left in the group (a worker that outlived its master)
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.log.close()


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def log_in(port: int, identifier: str, password: str) -> dict:
    """Cookies of a fresh signed-in session, plus the CSRF token its pages carry."""
    page = http(port, "GET", "/login")
    jar = page.cookies()
    reply = http(port, "POST", "/login", {"Cookie": cookie_header(jar)}, form={
        "identifier": identifier, "password": password, "next": "/users",
        "csrf_token": CSRF_RE.search(page.text).group(1)})
    if reply.status != 303:
        raise SystemExit(f"logging in as {identifier} answered {reply.status}")
    jar.update(reply.cookies())
    users_page = http(port, "GET", "/users", {"Cookie": cookie_header(jar)})
    jar.update(users_page.cookies())
    return {"cookie": cookie_header(jar), "csrf": CSRF_RE.search(users_page.text).group(1)}


def first_load(port: int, cookie: str) -> dict:
    """What a browser downloads for a first visit to /users: the page and what it links."""
    headers = {"Cookie": cookie, "Accept-Encoding": "gzip, deflate, br"}
    page = http(port, "GET", "/users", headers)
    assets = re.findall(r'<(?:link[^>]+href|script[^>]+src)="(/static/[^"]+)"', page.text)
    items = [("/users", page)] + [(path, http(port, "GET", path, headers)) for path in assets]
    files = []
    for path, reply in items:
        files.append({"path": path, "status": reply.status, "wire_bytes": reply.wire_bytes,
                      "body_bytes": len(reply.raw_body), "uncompressed_bytes": len(reply.body),
                      "content_encoding": reply.header("content-encoding", ""),
                      "cache_control": reply.header("cache-control", ""), "etag": reply.header("etag", "")})
    return {"wire_bytes": sum(f["wire_bytes"] for f in files),
            "uncompressed_bytes": sum(f["uncompressed_bytes"] for f in files), "files": files}


# ---- load ----------------------------------------------------------------------------------

def wrk(args, port: int, workdir: Path, name: str, path: str, script: str, env: dict) -> dict:
    out = workdir / f"{name}.json"
    command = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s",
               "--timeout", "10s", "-s", str(BENCH / script), f"http://127.0.0.1:{port}{path}"]
    environment = {**os.environ, "BENCH_DIR": str(BENCH), "BENCH_OUT": str(out),
                   "BENCH_THREADS": str(args.threads), **env}
    result = subprocess.run(command, env=environment, capture_output=True, text=True)
    if result.returncode != 0 or not out.exists():
        raise SystemExit(f"wrk failed for {name}:\n{result.stdout}\n{result.stderr}")
    data = json.loads(out.read_text())
    seconds = data["duration_us"] / 1e6
    data.update(name=name, path=path, rps=data["requests"] / seconds if seconds else 0.0,
                p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000)
    return data


class LoginStorm:
    """`clients` concurrent clients logging in with correct passwords, in a thread of its own.

    Each is a returning browser: it logged in once before the storm (one after the other) and
    sends the device cookie it got then, as people who log in every day do. Without it, all
    the storm's attempts would count against the one loopback address, and the throttle,
    which counts an attempt before checking it, would refuse most of them: that measures the
    throttle, not what logins cost the table."""

    def __init__(self, port: int, usernames: list[str], password: str):
        self.port, self.usernames, self.password = port, usernames, password
        self.latencies, self.failures = [], 0
        self.devices = {}
        self.started = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self.main()))

    async def log_in(self, username: str) -> bool:
        device = self.devices.get(username, {})
        try:
            page = await http_async(self.port, "GET", "/login", {"Cookie": cookie_header(device)})
            reply = await http_async(self.port, "POST", "/login", {
                "Cookie": cookie_header({**device, **page.cookies()})}, {
                "identifier": username, "password": self.password,
                "csrf_token": CSRF_RE.search(page.text).group(1)})
        except (OSError, AttributeError, ValueError, IndexError):
            return False
        self.devices[username] = {name: value for name, value in reply.cookies().items()
                                  if name.endswith("gatehouse-device")} or device
        return reply.status == 303

    async def client(self, username: str) -> None:
        while not self.stopping.is_set():
            begun = time.perf_counter()
            if await self.log_in(username):
                self.latencies.append(time.perf_counter() - begun)
                self.started.set()
            else:
                self.failures += 1

    async def main(self) -> None:
        await asyncio.gather(*(self.client(name) for name in self.usernames))

    def __enter__(self):
        for username in self.usernames:
            if not asyncio.run(self.log_in(username)) or not self.devices.get(username):
                raise SystemExit(f"the storm's account {username} could not log in before the storm")
        self.begun = time.perf_counter()
        self.thread.start()
        self.started.wait(timeout=30)
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join()
        self.seconds = time.perf_counter() - self.begun

    def summary(self) -> dict:
        ordered = sorted(self.latencies)

        def pct(p):
            return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000 if ordered else 0.0
        return {"clients": len(self.usernames), "logins": len(ordered), "failures": self.failures,
                "logins_per_s": len(ordered) / self.seconds, "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


# ---- peers: the same users page in the tools people would pick instead ---------------------

def sqladmin_log_in(port: int, password: str) -> str:
    reply = http(port, "POST", "/admin/login", form={"username": PEERS_ADMIN, "password": password})
    if reply.status != 302 or "session" not in reply.cookies():
        raise SystemExit(f"logging in to SQLAdmin answered {reply.status}")
    return cookie_header(reply.cookies())


def flask_security_log_in(port: int, password: str) -> str:
    page = http(port, "GET", "/login")
    jar = page.cookies()
    reply = http(port, "POST", "/login", {"Cookie": cookie_header(jar)}, form={
        "email": f"{PEERS_ADMIN}@example.com", "password": password,
        "csrf_token": FORM_CSRF_RE.search(page.text).group(1)})
    if reply.status != 302 or reply.header("location") != "/users":
        raise SystemExit(f"logging in to Flask-Security-Too answered {reply.status} to {reply.header('location')}")
    jar.update(reply.cookies())
    return cookie_header(jar)


class PeerApp(NamedTuple):
    title: str
    command: tuple[str, ...]  # the first word is in the peer's venv
    ready: str  # answers 200 once the app serves
    page: str  # the users page: the first 50 live users by lower(username)
    log_in: Callable[[int, str], str]  # (port, the admin's password) -> Cookie header


PEER_APPS = {
    "sqladmin": PeerApp(
        "SQLAdmin (uvicorn)",
        ("uvicorn", "sqladmin_app:app", "--host", "127.0.0.1", "--port", "0", "--workers", "1", "--no-access-log"),
        "/admin/login", "/admin/user/list", sqladmin_log_in),
    "flask-security": PeerApp(
        "Flask-Security-Too (gunicorn)",
        ("gunicorn", "--workers", "1", "--worker-class", "sync", "--bind", "127.0.0.1:0", "--no-control-socket",
         "fst_app:app"),
        "/login", "/users", flask_security_log_in),
}


def live_usernames(database: Path) -> list[str]:
    """Every live username in the order the users pages list them."""
    with closing(sqlite3.connect(database)) as db:
        return [name for name, in db.execute(
            "SELECT username FROM users WHERE deleted_at IS NULL ORDER BY lower(username), id")]


USERNAME_TOKEN = re.compile(r"(?<![\w.+-])[\w.+-]+(?![\w.+@-])")  # not an email's local part


def listed_usernames(html: str, known: set[str], viewer: str) -> list[str]:
    """The usernames a page lists, in order, whatever its markup: the words that are usernames,
    each once, except the viewer's own (in the page's header)."""
    seen = {}
    for word in USERNAME_TOKEN.findall(html):
        if word in known and word != viewer:
            seen.setdefault(word, None)
    return list(seen)


def check_same_usernames(listed: dict[str, list[str]], expected: list[str]) -> None:
    """Every app lists exactly `expected`, in order: the pages measured show the same rows."""
    for app, names in listed.items():
        if names != expected:
            at = next(i for i, (a, b) in enumerate(zip([*names, None], [*expected, None])) if a != b)
            raise SystemExit(f"{app} lists {len(names)} usernames on the measured page where the database's "
                             f"first {len(expected)} are expected; at position {at + 1}: "
                             f"{names[at] if at < len(names) else 'none'} instead of "
                             f"{expected[at] if at < len(expected) else 'none'}")


def peer_ratios(scenarios: dict) -> dict:
    """Gatehouse's requests/s over each peer's."""
    gatehouse = scenarios["gatehouse"]["rps"]
    return {name: gatehouse / (scenarios[name]["rps"] or 1) for name in scenarios
            if name in PEER_APPS}


def run_peers(args) -> dict:
    if args.peer_apps:  # their venvs, installed or checked (bench/peers/venvs.py)
        subprocess.run([sys.executable, str(PEERS / "venvs.py"), *args.peer_apps], check=True)
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-peers-"))
    database = workdir / "bench.sqlite3"
    env = bench_env(f"sqlite+aiosqlite:///{database}")
    log(f"Creating {args.users:,} demo users (SQLite in {workdir})…")
    run_cli(env, "demo-data", "--users", str(args.users))
    password = secrets.token_urlsafe(24)
    run_cli(env, "create-admin", "--username", PEERS_ADMIN, "--email", f"{PEERS_ADMIN}@example.com",
            stdin=password + "\n")
    names = live_usernames(database)
    expected, known = names[:50], set(names)
    browser = {"BENCH_ACCEPT_ENCODING": "gzip, deflate, br"}  # a first load, the same for all
    peer_env = {**os.environ, "DATABASE_PATH": str(database), "SECRET_KEY": secrets.token_urlsafe(48)}
    scenarios = {}

    def measure(name: str, title: str, server: Server, path: str, log_in) -> None:
        try:
            server.wait_until_up()
            cookie = log_in(server.port)
            page = http(server.port, "GET", path, {"Cookie": cookie}).text
            check_same_usernames({title: listed_usernames(page, known, PEERS_ADMIN)}, expected)
            if name == "gatehouse":
                log("  ceiling: /bench/ceiling")
                scenarios["ceiling"] = wrk(args, server.port, workdir, "ceiling", "/bench/ceiling", "get.lua", browser)
                scenarios["ceiling"]["title"] = "ceiling (Gatehouse, 5 KB, no db)"
            log(f"  {title}: {path}")
            scenarios[name] = wrk(args, server.port, workdir, name, path, "get.lua", {**browser, "BENCH_COOKIE": cookie})
            scenarios[name]["title"] = title
        finally:
            server.stop()

    log(f"Load: wrk, {args.connections} connections, {args.threads} threads, {args.duration} s each, "
        "the whole users page (no HX-Request)")
    try:
        measure("gatehouse", "Gatehouse (Hypercorn)", Server.gatehouse(env, args.port, 1, workdir / "gatehouse.log"),
                "/users", lambda port: log_in(port, PEERS_ADMIN, password)["cookie"])
        for name in args.peer_apps:
            peer = PEER_APPS[name]
            server = Server([str(PEERS / ".venvs" / name / "bin" / peer.command[0]), *peer.command[1:]], peer_env,
                            workdir / f"{name}.log", cwd=PEERS, ready=peer.ready)
            measure(name, peer.title, server, peer.page, lambda port: peer.log_in(port, password))
    except BaseException:
        log(f"Stopped early: the database and the servers' logs are in {workdir}")
        raise

    results = {
        "when": datetime.now().isoformat(timespec="seconds"), "smoke": args.smoke, "machine": machine(),
        "settings": {"users": len(names), "database": "sqlite", "workers": 1, "connections": args.connections,
                     "threads": args.threads, "duration_s": args.duration, "page_size": len(expected)},
        "usernames": expected, "scenarios": scenarios, "targets": PEER_TARGETS,
    }
    results["ratios"] = peer_ratios(scenarios)
    results["checks"] = peer_checks(results["ratios"])
    path = Path(args.out) if args.out and args.runs == 1 else \
        BENCH / "results" / f"{datetime.now():%Y%m%d-%H%M%S}-peers.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(peers_table(results))
    log(f"Results: {path}")
    shutil.rmtree(workdir, ignore_errors=True)
    return results


def peer_checks(ratios: dict) -> dict:
    return {name: {"value": ratio, "target": PEER_TARGETS[name], "kind": ">="} for name, ratio in ratios.items()}


def peers_median_of(runs: list[dict]) -> dict:
    """Each figure's median over `runs`; the ratios are the medians of each run's ratio (both
    sides of a ratio measured in the same minute of the same run)."""
    result = copy.deepcopy(runs[0])
    median_scenarios(result, runs)
    result["ratios"] = {name: statistics.median(r["ratios"][name] for r in runs) for name in result["ratios"]}
    result["checks"] = peer_checks(result["ratios"])
    result["when"] = f"median of {len(runs)} runs, {runs[0]['when']} to {runs[-1]['when']}"
    result["runs"] = [r["when"] for r in runs]
    return result


def peers_table(r: dict) -> str:
    s, st, m = r["scenarios"], r["settings"], r["machine"]
    lines = [f"\nThe whole users page against peers {r['when']}{' (smoke)' if r['smoke'] else ''}: {m['cores']} cores "
             f"{m['cpu_model']}, Python {m['python']}, {st['users']:,} users, SQLite, one worker each, first "
             f"{st['page_size']} by username, wrk -c{st['connections']} -t{st['threads']} -d{st['duration_s']}s",
             f"{'app':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'KB/page':>8}  Gatehouse ×"]
    for name, d in s.items():
        ratio = f"{r['ratios'][name]:.1f}" if name in r["ratios"] else ""
        errors = sum(d["errors"].values())
        lines.append(f"{d['title'][:34]:34} {d['rps']:9,.0f} {d['p50_ms']:8.1f} {d['p99_ms']:8.1f} "
                     f"{d['bytes'] / (d['requests'] or 1) / 1024:8.1f}  {ratio}"
                     + (f"  {errors} errors {d['errors']}" if errors else ""))
    lines.append("targets: " + (", ".join(
        f"{name} {v['value']:.1f}x {v['kind']} {v['target']}x {'ok' if ok(v) else 'MISSED'}"
        for name, v in r["checks"].items()) or "none (Gatehouse alone)"))
    return "\n".join(lines)


# ---- the run -------------------------------------------------------------------------------

def machine() -> dict:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split(" [")[0]
    return {"cores": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "kernel": platform.release(), "wrk": wrk_version.strip()}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, help="demo users in the fresh database (default 100,000; --peers: 10,000)")
    p.add_argument("--duration", type=int, default=10, help="seconds per scenario (default 10)")
    p.add_argument("--connections", type=int, help="wrk connections (default 16; --peers: 8)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--workers", type=int, default=1, help="Hypercorn workers (default 1; use PostgreSQL for more)")
    p.add_argument("--storm-clients", type=int, default=16, help="concurrent logins in the storm (default 16)")
    p.add_argument("--save-rows", type=int, default=2000, help="rows the save scenario spreads over")
    p.add_argument("--database-url", help="an EMPTY database to use instead of a fresh SQLite file")
    p.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    p.add_argument("--out", help="JSON results file (default bench/results/<timestamp>.json)")
    p.add_argument("--smoke", action="store_true", help="check the plumbing: no targets, tagged as a smoke run")
    p.add_argument("--runs", type=int, default=1,
                   help="repeat the whole benchmark (fresh database, fresh server) and report each "
                        "figure's median; --out then receives the median (default 1)")
    p.add_argument("--peers", action="store_true",
                   help="the whole users page of Gatehouse against peer apps (bench/peers/; installs their "
                        "venvs on first use), on one SQLite file, one worker each")
    p.add_argument("--peer-apps", type=lambda text: [name for name in text.split(",") if name],
                   default=list(PEER_APPS), metavar="NAMES",
                   help=f"with --peers: which, comma-separated (default {','.join(PEER_APPS)}; empty: Gatehouse alone)")
    args = p.parse_args(argv)
    if args.runs < 1 or (args.runs > 1 and args.database_url):
        p.error("--runs takes 1 or more, and more than 1 only with the fresh SQLite database of each run")
    if args.peers and (args.database_url or args.workers != 1):
        p.error("--peers serves a fresh SQLite file with one worker per app")
    if unknown := set(args.peer_apps) - set(PEER_APPS):
        p.error(f"--peer-apps: no peer app named {', '.join(sorted(unknown))}")
    args.users = args.users or (10_000 if args.peers else 100_000)
    args.connections = args.connections or (8 if args.peers else 16)
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--scale"]:  # every view at a million users, with one client (bench/scale.py)
        spec = importlib.util.spec_from_file_location("bench_scale", BENCH / "scale.py")
        scale = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(scale)
        return scale.main(argv[1:])
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        log("wrk is not installed: apt-get install -y wrk")
        return 2
    if args.peers:
        bench, combine, show, suffix = run_peers, peers_median_of, peers_table, "-peers"
    else:
        bench, combine, show, suffix = run_once, median_of, table, ""
    runs = [bench(args) for _ in range(args.runs)]
    if args.runs > 1:
        median = combine(runs)
        path = Path(args.out) if args.out else BENCH / "results" / f"{datetime.now():%Y%m%d-%H%M%S}{suffix}-median.json"
        path.write_text(json.dumps(median, indent=2) + "\n")
        print(show(median))
        log(f"Median of {args.runs} runs: {path}")
    return 0


def bench_env(database_url: str) -> dict:
    return {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": secrets.token_urlsafe(48),
            "GATEHOUSE_ENV": "development", "GATEHOUSE_BENCH": "1"}


def run_once(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-"))
    database_url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'bench.sqlite3'}"
    env = bench_env(database_url)
    if args.database_url:
        asyncio.run(require_empty(database_url))

    log(f"Creating {args.users:,} demo users ({'SQLite in ' + str(workdir) if not args.database_url else 'given database'})…")
    started = time.perf_counter()
    out = run_cli(env, "demo-data", "--users", str(args.users))
    demo_password = re.search(r"their password is (\S+)", out).group(1)
    admin_password = secrets.token_urlsafe(24)
    run_cli(env, "create-admin", "--username", ADMIN, "--email", f"{ADMIN}@example.com", stdin=admin_password + "\n")
    rows = asyncio.run(pick_rows(database_url, args.save_rows, args.storm_clients))
    log(f"  done in {time.perf_counter() - started:.0f} s")
    (workdir / "save-ids.txt").write_text("".join(f"{i} {v}\n" for i, v in rows["save"]))

    server = Server.gatehouse(env, args.port, args.workers, workdir / "server.log")
    try:
        return run_scenarios(args, workdir, server, rows, admin_password, demo_password)
    except BaseException:
        log(f"Stopped early: the database and the server log are in {workdir}")
        raise


def run_scenarios(args, workdir, server, rows, admin_password, demo_password) -> dict:
    try:
        server.wait_until_up()
        session = log_in(server.port, ADMIN, admin_password)
        signed_in = {"BENCH_COOKIE": session["cookie"], "BENCH_CSRF": session["csrf"],
                     "BENCH_ACCEPT_ENCODING": "gzip, deflate, br"}
        fragment = {**signed_in, "BENCH_HX_TARGET": "users-table"}
        scenarios = {}

        def scenario(name, path, script="get.lua", env=None, title=None):
            log(f"  {title or name}: {path}")
            scenarios[name] = wrk(args, server.port, workdir, name, path, script, env or {})
            scenarios[name]["title"] = title or name
            return scenarios[name]

        log(f"Load: wrk, {args.connections} connections, {args.threads} threads, {args.duration} s each")
        scenario("ceiling", "/bench/ceiling", env={"BENCH_ACCEPT_ENCODING": "gzip, deflate, br"},
                 title="ceiling (5 KB, no db)")
        scenario("table_page1", "/users", env=fragment, title="users table, page 1")
        scenario("table_deep", rows["deep_url"], env=fragment, title=f"users table, page {rows['deep_page']:,}")
        scenario("search", "/users?" + urlencode({"q": SEARCH}), env=fragment, title=f"search q={SEARCH}")
        rss_before_storm = {str(pid): peak_rss_kb(pid) for pid in server.workers()}
        with LoginStorm(server.port, rows["storm"], demo_password) as storm:
            scenario("storm_table_deep", rows["deep_url"], env=fragment,
                     title=f"table deep + {args.storm_clients} logins")
        scenarios["storm_table_deep"]["logins"] = storm.summary()
        scenario("save", "/users/0", script="save.lua",
                 env={**signed_in, "BENCH_ACCEPT_ENCODING": "", "BENCH_HX_TARGET": "",
                      "BENCH_IDS": str(workdir / "save-ids.txt")},
                 title=f"inline save ({len(rows['save']):,} rows)")
        load = first_load(server.port, session["cookie"])
        workers = server.workers()
        rss = {str(pid): peak_rss_kb(pid) for pid in workers}
    finally:
        server.stop()
        log("Server stopped.")

    results = {
        "when": datetime.now().isoformat(timespec="seconds"), "smoke": args.smoke,
        "machine": machine(),
        "settings": {"users": rows["total"], "database": "sqlite" if not args.database_url else "given",
                     "workers": args.workers, "connections": args.connections, "threads": args.threads,
                     "duration_s": args.duration, "storm_clients": args.storm_clients},
        "scenarios": scenarios, "peak_rss_kb": rss, "peak_rss_kb_before_storm": rss_before_storm,
        "first_load": load, "targets": TARGETS,
    }
    results["checks"] = checks(results)
    path = Path(args.out) if args.out and args.runs == 1 else \
        BENCH / "results" / f"{datetime.now():%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    shutil.copy(workdir / "server.log", path.with_suffix(".server.log"))
    print(table(results))
    log(f"Results: {path}")
    if not args.database_url:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def median_of(runs: list[dict]) -> dict:
    """One result whose every figure is its median over `runs` (whole runs of the same code
    differ by about ±10% in requests/s on two cores), printed and checked like a single run.
    Errors, conflicts and failed logins are summed, not averaged away."""
    def median(get):
        return statistics.median(get(r) for r in runs)
    result = copy.deepcopy(runs[0])
    median_scenarios(result, runs)
    for key in ("peak_rss_kb", "peak_rss_kb_before_storm"):
        result[key] = {"median": median(lambda r: max(r[key].values()))}
    for key in ("wire_bytes", "uncompressed_bytes"):
        result["first_load"][key] = median(lambda r: r["first_load"][key])
    result["when"] = f"median of {len(runs)} runs, {runs[0]['when']} to {runs[-1]['when']}"
    result["runs"] = [r["when"] for r in runs]
    result["checks"] = checks(result)
    return result


def median_scenarios(result: dict, runs: list[dict]) -> None:
    """Each scenario's figures in `result` made their median over `runs`; errors, conflicts and
    failed logins summed."""
    def median(get):
        return statistics.median(get(r) for r in runs)
    for name, scenario in result["scenarios"].items():
        for key in ("requests", "duration_us", "bytes", "rps", "p50_ms", "p99_ms", "saved"):
            if key in scenario:
                scenario[key] = median(lambda r: r["scenarios"][name][key])
        for key in ("conflicts", "other"):
            if key in scenario:
                scenario[key] = sum(r["scenarios"][name][key] for r in runs)
        scenario["errors"] = {kind: sum(r["scenarios"][name]["errors"][kind] for r in runs)
                              for kind in scenario["errors"]}
        if "logins" in scenario:
            logins = scenario["logins"]
            for key in ("logins", "logins_per_s", "p99_ms"):
                logins[key] = median(lambda r: r["scenarios"][name]["logins"][key])
            logins["failures"] = sum(r["scenarios"][name]["logins"]["failures"] for r in runs)


async def require_empty(url: str) -> None:
    from sqlalchemy import func, select
    from web.core.db import Database
    from web.core.tables import users
    db = Database(url)
    try:
        await db.create_schema()
        async with db.read() as conn:
            if (await conn.execute(select(func.count()).select_from(users))).scalar_one():
                raise SystemExit("--database-url must name an empty database: the benchmark fills it")
    finally:
        await db.dispose()


def checks(r: dict) -> dict:
    s = r["scenarios"]
    ceiling = s["ceiling"]["rps"] or 1
    storm_ratio = s["storm_table_deep"]["p99_ms"] / (s["table_deep"]["p99_ms"] or 1)
    return {
        "table_deep": {"value": s["table_deep"]["rps"] / ceiling, "target": TARGETS["table_deep"], "kind": ">="},
        "search": {"value": s["search"]["rps"] / ceiling, "target": TARGETS["search"], "kind": ">="},
        "save": {"value": s["save"]["saved"] / (s["save"]["duration_us"] / 1e6) / ceiling,
                 "target": TARGETS["save"], "kind": ">="},
        "storm_p99_ratio": {"value": storm_ratio, "target": TARGETS["storm_p99_ratio"], "kind": "<="},
        "rss_mb": {"value": max(r["peak_rss_kb"].values()) / 1024, "target": TARGETS["rss_mb"], "kind": "<="},
        "first_load_kb": {"value": r["first_load"]["wire_bytes"] / 1024, "target": TARGETS["first_load_kb"], "kind": "<="},
    }


def table(r: dict) -> str:
    s, c = r["scenarios"], r["checks"]
    ceiling = s["ceiling"]["rps"] or 1
    m, st = r["machine"], r["settings"]
    lines = [f"\nGatehouse benchmark {r['when']}{' (smoke)' if r['smoke'] else ''}: {m['cores']} cores "
             f"{m['cpu_model']}, Python {m['python']}, {st['users']:,} users, {st['database']}, "
             f"{st['workers']} worker(s), wrk -c{st['connections']} -t{st['threads']} -d{st['duration_s']}s",
             f"{'scenario':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ceiling':>8}  errors / notes"]
    for name, d in s.items():
        notes = []
        errors = sum(d["errors"].values())
        if errors:
            notes.append(f"{errors} errors {d['errors']}")
        if name == "save":
            notes.append(f"{d['saved']:,.0f} saved, {d['conflicts']} conflicts (409), {d['other']} other")
        if "logins" in d:
            lg = d["logins"]
            notes.append(f"{lg['logins']:.0f} logins ({lg['logins_per_s']:.1f}/s, p99 {lg['p99_ms']:.0f} ms), "
                         f"{lg['failures']} failed; table p99 × {c['storm_p99_ratio']['value']:.2f}")
        rps = d["saved"] / (d["duration_us"] / 1e6) if name == "save" else d["rps"]
        lines.append(f"{d['title'][:34]:34} {rps:9,.0f} {d['p50_ms']:8.1f} {d['p99_ms']:8.1f} "
                     f"{rps / ceiling:8.1%}  {'; '.join(notes)}")
    rss = ", ".join(f"{kb / 1024:.0f} MB" for kb in r["peak_rss_kb"].values())
    fl = r["first_load"]
    before = ", ".join(f"{kb / 1024:.0f} MB" for kb in r["peak_rss_kb_before_storm"].values())
    lines.append(f"peak RSS (VmHWM) of the worker(s): {rss} (before the login storm: {before})")
    lines.append(f"first load of /users: {fl['wire_bytes'] / 1024:.1f} KB over the wire "
                 f"({fl['uncompressed_bytes'] / 1024:.1f} KB uncompressed, {len(fl['files'])} responses)")
    lines.append("targets: " + ", ".join(
        f"{name} {v['value']:.2f} {v['kind']} {v['target']} {'ok' if ok(v) else 'MISSED'}" for name, v in c.items()))
    return "\n".join(lines)


def ok(check: dict) -> bool:
    return check["value"] >= check["target"] if check["kind"] == ">=" else check["value"] <= check["target"]


if __name__ == "__main__":
    sys.exit(main())
