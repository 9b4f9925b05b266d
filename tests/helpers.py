"""Helpers for the accounts HTTP tests: CSRF tokens, logging in, htmx headers, cookies, db reads.

Hashing a password with the app's argon2 parameters takes about a second on a small machine,
so tests that are not about logging in open a session directly (`open_session`): a session
row as a login writes it, and the signed cookie quart-auth would set.
"""
import re
from datetime import timedelta
from html import unescape

from quart_auth import generate_auth_token
from sqlalchemy import func, select, update

from conftest import PASSWORD, csrf_from
from web.accounts import sessions as web_sessions
from web.core.db import utcnow
from web.core.tables import audit_events, login_throttle, sessions, users

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


# ---- sessions without a login ----------------------------------------------------------

async def open_session(app, client, user_id: int, *, remember: bool = False,
                       user_agent: str = "pytest", ip: str = "") -> str:
    """Sign `client` in as `user_id` the way a login does, without hashing; returns the session id."""
    async with app.db.write() as conn:
        raw = await web_sessions.start(conn, user_id, remember, user_agent, ip, app.config["GATEHOUSE"])
    set_auth_cookie(client, generate_auth_token(client, raw))
    return web_sessions.session_id(raw)


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

def element_text(html: str, element_id: str) -> str:
    """The text inside the element with this id (its first child level, tags removed)."""
    match = re.search(rf'<(\w+)[^>]*\bid="{re.escape(element_id)}"[^>]*>(.*?)</\1>', html, re.S)
    assert match, f"no element with id {element_id!r} in the page"
    return unescape(re.sub(r"<[^>]+>", "", match.group(2))).strip()


def input_value(html: str, name: str) -> str | None:
    match = re.search(rf'<input[^>]*\bname="{re.escape(name)}"[^>]*>', html)
    if not match:
        return None
    value = re.search(r'\bvalue="([^"]*)"', match.group(0))
    return unescape(value.group(1)) if value else None


def location(response) -> str:
    return response.headers.get("Location", "")


def is_login_redirect(response) -> bool:
    return response.status_code in (302, 303) and location(response).startswith("/login")


# ---- the database ----------------------------------------------------------------------

async def rows(db, query):
    async with db.read() as conn:
        return (await conn.execute(query)).all()


async def execute(db, statement) -> None:
    async with db.write() as conn:
        await conn.execute(statement)


async def user_row(db, user_id: int):
    return (await rows(db, select(users).where(users.c.id == user_id)))[0]


async def user_named(db, username: str):
    found = await rows(db, select(users).where(func.lower(users.c.username) == username.lower()))
    return found[0] if found else None


async def user_count(db) -> int:
    return (await rows(db, select(func.count()).select_from(users)))[0][0]


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
