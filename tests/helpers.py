"""Helpers shared by the tests: CSRF tokens, logging in, htmx requests and answers, cookies,
pages and their pagers, db reads, audit events, mail, forms over HTTP against a live server,
run.py, and the browser.

Hashing a password with the app's argon2 parameters takes about a second on a small machine,
so tests that are not about logging in open a session directly (`open_session`): a session
row as a login writes it, and the signed cookie quart-auth would set.
"""
import asyncio
import base64
import json
import os
import re
import secrets
import subprocess
import sys
from datetime import timedelta
from html import unescape
from urllib.parse import urlencode, urlsplit

import httpx
from quart_auth import generate_auth_token
from sqlalchemy import event, func, insert, select, update

from conftest import PASSWORD, ROOT, SECRET, csrf_from
from loopback_smtp import links
from web.accounts import sessions as web_sessions
from web.core.audit_trail import seal_backlog
from web.core.db import utcnow
from web.core.tables import audit_events, login_throttle, outbox, sessions, users

AUTH_COOKIE = "gatehouse"  # QUART_AUTH_COOKIE_NAME outside production
HOST = "localhost"  # what the quart test client sends as Host


# ---- requests --------------------------------------------------------------------------

def htmx(target: str | None = None, **more: str) -> dict[str, str]:
    """The headers htmx sends, aimed at the element with id `target`."""
    headers = {"HX-Request": "true"}
    if target:
        headers["HX-Target"] = target
    headers.update(more)
    return headers


async def text(response) -> str:
    return await response.get_data(as_text=True)


async def token(client) -> str:
    """A CSRF token for this client, from a page it fetches (the login page, or its profile
    once it is signed in and /login sends it away)."""
    for path in ("/login", "/profile"):
        response = await client.get(path)
        if response.status_code == 200:
            return csrf_from(await text(response))
    raise AssertionError("neither /login nor /profile answered with a page")


async def post(client, path: str, form: dict | None = None, *, headers: dict | None = None,
               scope_base: dict | None = None, csrf: bool = True):
    """POST a form, with this client's CSRF token unless `csrf=False` or one is given."""
    form = dict(form or {})
    if csrf and "csrf_token" not in form:
        form["csrf_token"] = await token(client)
    return await client.post(path, form=form, headers=headers or {}, scope_base=scope_base)


async def login(client, identifier: str, password: str = PASSWORD, *, headers: dict | None = None,
                ip: str | None = None, **extra: str):
    """Fill in and send the login form; returns the answer to the POST."""
    scope_base = {"client": (ip, 50000)} if ip else None
    form = {"identifier": identifier, "password": password, **extra}
    return await post(client, "/login", form, headers=headers, scope_base=scope_base)


async def login_ok(client, identifier: str, **kwargs):
    response = await login(client, identifier, **kwargs)
    assert response.status_code == 303, (response.status_code, await text(response))
    return response


async def csrf(client) -> str:
    """This client's CSRF token (it lives in the session cookie, so one fetch is enough)."""
    if not getattr(client, "_csrf", None):
        response = await client.get("/users")
        client._csrf = csrf_from(await text(response)) if response.status_code == 200 else await token(client)
    return client._csrf


async def send(client, path: str, form=(), *, target: str | None = None, hx: bool = True,
               with_csrf: bool = True):
    """POST a form (a dict, or pairs for repeated names) the way htmx (or a plain form) does."""
    pairs = list(form.items()) if isinstance(form, dict) else list(form)
    if with_csrf:
        pairs.append(("csrf_token", await csrf(client)))
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if hx:
        headers.update(htmx(target))
    return await client.post(path, data=urlencode(pairs), headers=headers)


# ---- htmx answers ----------------------------------------------------------------------

def triggers(response) -> dict:
    return json.loads(response.headers.get("HX-Trigger") or "{}")


def toasts(response, level: str | None = None) -> list[dict]:
    items = triggers(response).get("toast", {}).get("items", [])
    return [i for i in items if level is None or i["level"] == level]


async def assert_refused(response, code: int, says: str | None = None):
    """An htmx request refused by abort(): no body, no swap, the reason in an error toast."""
    assert response.status_code == code, (response.status_code, await text(response))
    assert await text(response) == ""
    assert response.headers.get("HX-Reswap") == "none"
    errors = toasts(response, "error")
    assert errors, triggers(response)
    if says:
        assert says in errors[0]["text"], errors


# ---- sessions without a login ----------------------------------------------------------

async def open_session(app, client, user_id: int, *, remember: bool = False,
                       user_agent: str = "pytest", ip: str = "") -> str:
    """Sign `client` in as `user_id` the way a login does, without hashing; returns the session id."""
    async with app.db.write() as conn:
        raw = await web_sessions.start(conn, user_id, remember, user_agent, ip, app.config["GATEHOUSE"])
    set_auth_cookie(client, generate_auth_token(client, raw))
    return web_sessions.session_id(raw)


async def signed_in_as(app, user_id: int):
    """A new test client with a session for `user_id`."""
    client = app.test_client()
    await open_session(app, client, user_id)
    return client


async def signed_in(app, make_user, role="Admin", **kwargs):
    """A new account of `role` and a test client with a session for it."""
    account = await make_user(role, **kwargs)
    return account, await signed_in_as(app, account["id"])


def set_auth_cookie(client, value: str) -> None:
    client.set_cookie(HOST, AUTH_COOKIE, value, httponly=True, samesite="Lax")


def cookie_value(client, name: str = AUTH_COOKIE) -> str | None:
    values = [c.value for c in client.cookie_jar if c.name == name]
    return values[-1] if values else None


def set_cookie_line(response, name: str = AUTH_COOKIE) -> str | None:
    """The Set-Cookie header of the response that sets `name`, or None."""
    for line in response.headers.getlist("Set-Cookie"):
        if line.startswith(name + "="):
            return line
    return None


def load_auth_token(app, cookie: str) -> str | None:
    """The random session token inside a signed auth cookie."""
    extension = next(e for e in app.extensions["QUART_AUTH"] if e.singleton)
    return extension.load_token(cookie, app)


# ---- pages -----------------------------------------------------------------------------

async def page(client, url: str, **headers) -> str:
    """The HTML at `url`, which must answer 200."""
    response = await client.get(url, headers=headers)
    body = await text(response)
    assert response.status_code == 200, (url, response.status_code, body[:500])
    return body


def element_html(html: str, element_id: str) -> str:
    """The markup inside the element with this id (up to its first closing tag of that name)."""
    match = re.search(rf'<(\w+)[^>]*\bid="{re.escape(element_id)}"[^>]*>(.*?)</\1>', html, re.S)
    assert match, f"no element with id {element_id!r} in the page"
    return match.group(2)


def element_text(html: str, element_id: str) -> str:
    """The text inside the element with this id (its first child level, tags removed)."""
    return unescape(re.sub(r"<[^>]+>", "", element_html(html, element_id))).strip()


def input_value(html: str, name: str) -> str | None:
    match = re.search(rf'<input[^>]*\bname="{re.escape(name)}"[^>]*>', html)
    if not match:
        return None
    value = re.search(r'\bvalue="([^"]*)"', match.group(0))
    return unescape(value.group(1)) if value else None


def normalised(html: str) -> str:
    """The page without its CSRF tokens (masked afresh at every use)."""
    return re.sub(r'(name="csrf_token" value="|"X-CSRF-Token": ")[^"]+', r"\1CSRF", html)


def location(response) -> str:
    return response.headers.get("Location", "")


def is_login_redirect(response) -> bool:
    return response.status_code in (302, 303) and location(response).startswith("/login")


def total_shown(html: str) -> int:
    """The number of users the users table says it holds ("120 users", or "1–50 of 120 users")."""
    match = re.search(r'id="users-count"[^>]*>\s*(?:[\d,]+–[\d,]+ of )?([\d,]+) users?\b', html)
    assert match, "no user count in the table"
    return int(match.group(1).replace(",", ""))


# ---- keyset pages ----------------------------------------------------------------------

def pager_link(html: str, kind: str) -> str | None:
    """The href of the pager link marked data-page=kind (first, prev, next), or None."""
    match = re.search(rf'<a href="([^"]*)"[^>]*\bdata-page="{kind}"', html)
    return unescape(match.group(1)) if match else None


def cursor(value, row_id) -> str:
    """A keyset cursor as the pager links carry it: the sort value and the row id."""
    raw = json.dumps([value, row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def page_and_statements(app, client, url: str) -> tuple[str, list[tuple[str, object]]]:
    """The page at `url` and every SQL statement, with its parameters, that answering it ran."""
    statements = []

    def remember(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    for engine in app.db.sync_engines:
        event.listen(engine, "before_cursor_execute", remember)
    try:
        body = await page(client, url)
    finally:
        for engine in app.db.sync_engines:
            event.remove(engine, "before_cursor_execute", remember)
    return body, statements


def assert_no_offset(statements) -> None:
    """SQLAlchemy's SQLite dialect writes "LIMIT ? OFFSET ?" for every LIMIT, with 0 bound as the
    offset: that skips nothing. Any other OFFSET would be the app paging by skipping rows."""
    for statement, parameters in statements:
        if "OFFSET" not in statement.upper():
            continue
        assert re.search(r"LIMIT \? OFFSET \?\s*$", statement), statement
        assert list(parameters)[-1] == 0, (statement, parameters)


# ---- the database ----------------------------------------------------------------------

async def rows(db, query):
    async with db.read() as conn:
        return (await conn.execute(query)).all()


async def execute(db, statement) -> None:
    async with db.write() as conn:
        await conn.execute(statement)


async def scalar(db, query):
    async with db.read() as conn:
        return (await conn.execute(query)).scalar_one()


async def user_row(db, user_id: int):
    return (await rows(db, select(users).where(users.c.id == user_id)))[0]


async def user_named(db, username: str):
    found = await rows(db, select(users).where(func.lower(users.c.username) == username.lower()))
    return found[0] if found else None


async def user_count(db) -> int:
    return await scalar(db, select(func.count()).select_from(users))


async def session_rows(db, user_id: int | None = None):
    query = select(sessions).order_by(sessions.c.created_at)
    if user_id is not None:
        query = query.where(sessions.c.user_id == user_id)
    return await rows(db, query)


async def audit_rows(db, action: str):
    return await rows(db, select(audit_events).where(audit_events.c.action == action)
                      .order_by(audit_events.c.id))


async def unlock_throttle(db) -> None:
    """As if the lock had run out: every locked_until moved into the past."""
    await execute(db, update(login_throttle).where(login_throttle.c.locked_until.is_not(None))
                  .values(locked_until=utcnow() - timedelta(seconds=1)))


# ---- audit events ----------------------------------------------------------------------

def event_row(occurred_at, *, actor=None, action="update", target_type="user", target_id=None,
              changes=None, ip="", actor_name=None, target_name="") -> dict:
    """One row for audit_events; every row has every key, as executemany wants."""
    return {
        "occurred_at": occurred_at,
        "actor_id": actor["id"] if actor else None,
        "actor_name": actor_name if actor_name is not None else (actor["username"] if actor else ""),
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "target_name": target_name,
        "changes": changes,
        "ip": ip,
    }


async def insert_events(db, rows, batch: int = 10_000) -> None:
    for start in range(0, len(rows), batch):
        async with db.write() as conn:
            await conn.execute(insert(audit_events), rows[start:start + batch])
            await conn.run_sync(seal_backlog, db.audit_key)  # into the hash chain, as record() does


# ---- mail in the outbox ----------------------------------------------------------------

MAILED_LINK = re.compile(r"https?://[^\s\"<>]+")


async def mail_to(db, address: str, kind: str):
    """The outbox's messages of `kind` to `address`, oldest first."""
    return await rows(db, select(outbox).where(outbox.c.recipient == address, outbox.c.kind == kind)
                      .order_by(outbox.c.id))


def mailed_path(mailed: list, address: str, kind: str, prefix: str, nth: int = -1) -> str:
    """The path of the link starting with `prefix` (its token included) in the `nth` message of
    `kind` to `address` the app posted (the `mailed` fixture)."""
    messages = [m for m in mailed if m.recipient == address and m.kind == kind]
    assert messages, f"no {kind} message to {address}"
    paths = [urlsplit(url).path for url in MAILED_LINK.findall(messages[nth].text)]
    found = [path for path in paths if path.startswith(prefix)]
    assert found, (prefix, messages[nth].text)
    return found[0]


async def sent_once(db, address: str, kind: str):
    """The outbox row of the one message of `kind` to `address`, once a sender has marked it
    sent (the SMTP server may hold the message a moment before the sender's mark commits)."""
    for _ in range(200):
        [row] = await mail_to(db, address, kind)
        if row.sent_at is not None:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"the {kind} message to {address} was never marked sent")


# ---- over HTTP, against the real server and SMTP server (the mail_server fixture) -------

def mailbox_address(label: str) -> str:
    """An address no other test (or run on the other database) sends to."""
    return f"{label}.{secrets.token_hex(4)}@example.com"


def mailed_url(message, path: str) -> str:
    """The one link to /<path>/... in a message the SMTP server received."""
    [url] = [link for link in links(message) if f"/{path}/" in link]
    return url


async def form_token(http: httpx.AsyncClient, path: str) -> str:
    """The CSRF token of the page at `path`, which must answer 200."""
    response = await http.get(path)
    assert response.status_code == 200, response.text[:300]
    return csrf_from(response.text)


async def posted(http: httpx.AsyncClient, path: str, form: dict, page: str | None = None) -> httpx.Response:
    """POST a form with the CSRF token of `page` (the path itself by default)."""
    return await http.post(path, data={**form, "csrf_token": await form_token(http, page or path)})


async def posted_at_once(base_url: str, path: str, forms: list[dict]) -> list[httpx.Response]:
    """Each form POSTed to `path` at the same moment, from a browser of its own (its own
    cookies and CSRF token, read from the page first); the answers in the same order."""
    browsers = [httpx.AsyncClient(base_url=base_url, timeout=30) for _ in forms]
    try:
        forms = [{**form, "csrf_token": await form_token(b, path)} for b, form in zip(browsers, forms)]
        return await asyncio.gather(*(b.post(path, data=form) for b, form in zip(browsers, forms)))
    finally:
        for b in browsers:
            await b.aclose()


# ---- run.py ----------------------------------------------------------------------------

def run_cli(*args, database_url: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """run.py as an operator runs it: a subprocess on `database_url`."""
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": SECRET, "GATEHOUSE_ENV": "development"}
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


def run_module():
    """run.py imported in this process (it lives at the repo root, not in a package)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import run
    return run


# ---- the browser -----------------------------------------------------------------------

async def log_in(page, base: str, username: str, next_path: str = "/users"):
    """Log in through the form, as `username`, and wait to land on `next_path`."""
    await page.goto(f"{base}/login?next={next_path}")
    await page.fill("#login-identifier", username)
    await page.fill("#login-password", PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url(base + next_path)


def focused_row(page):
    return page.locator("tr[data-row]:focus")


async def axe_violations(page, rules: tuple[str, ...] = ()) -> list:
    """Serious and critical findings of axe-core (of `rules` only, when named), injected past
    the CSP for the test only, once per document."""
    if not await page.evaluate("typeof axe !== 'undefined'"):
        await page.add_script_tag(path=str(next((ROOT / "tests" / "vendor").glob("axe-*.min.js"))))
    options = {"resultTypes": ["violations"]}
    if rules:
        options["runOnly"] = {"type": "rule", "values": list(rules)}
    result = await page.evaluate("options => axe.run(document, options)", options)
    return [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


async def axe_violations_of(browser, page) -> list:
    """axe_violations of what `page` shows, reloaded in a context of its own that lets axe in
    past the CSP (the journey's page keeps it) and holds the page's cookies (its session)."""
    context = await browser.new_context(bypass_csp=True)
    try:
        await context.add_cookies(await page.context.cookies())
        copy = await context.new_page()
        await copy.goto(page.url)
        return await axe_violations(copy)
    finally:
        await context.close()


# Every focusable element that is shown must lie inside each ancestor box that clips what
# overflows it (overflow other than visible: a scrolling table wrapper, a card hiding its
# overflow), and the page itself must not be wider than the window. A page-level check alone
# passes while buttons are hidden inside a clipping card.
LAYOUT_PROBLEMS = """() => {
  const problems = [];
  const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
    + (typeof el.className === "string" && el.className.trim() ? "." + el.className.trim().split(/\\s+/).join(".") : "")
    + ` "${(el.textContent || el.value || "").trim().replace(/\\s+/g, " ").slice(0, 40)}"`;
  const page = document.scrollingElement;
  if (page.scrollWidth > window.innerWidth) {
    const wide = [...document.body.querySelectorAll("*")].filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1);
    problems.push(`the page is ${page.scrollWidth}px wide: ` + wide.slice(-3).map(name).join(", "));
  }
  const focusable = "a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]";
  for (const el of document.querySelectorAll(focusable)) {
    if (el.matches(".skip-link") || !el.checkVisibility({visibilityProperty: true})) continue;
    const r = el.getBoundingClientRect();
    if (!r.width && !r.height) continue;
    for (let box = el.parentElement; box && box !== document.documentElement; box = box.parentElement) {
      const style = getComputedStyle(box);
      if (style.overflowX === "visible" && style.overflowY === "visible") continue;
      const b = box.getBoundingClientRect();
      if (r.left < b.left - 1 || r.right > b.right + 1 || r.top < b.top - 1 || r.bottom > b.bottom + 1) {
        problems.push(`${name(el)} sticks out of ${name(box)}`);
        break;
      }
    }
  }
  return problems;
}"""


async def layout_problems(page) -> list[str]:
    """What sticks out at the page's current width (LAYOUT_PROBLEMS); empty when all fits."""
    return await page.evaluate(LAYOUT_PROBLEMS)
