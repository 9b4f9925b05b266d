"""Asking for a mailed link (a password reset, the confirmation link again): what both request
forms do alike.

Whatever was typed, a request writes the same: one count against the account it names, its
row locked, or against the name typed when no account has it, so no trace tells the two
apart. The form answers the same page either way ("sent"); only a client address that asks
too often is told so (429), which says nothing about any account.
"""
from ..core.render import render
from . import queries, throttle


def account_key(kind: str, user_id: int) -> str:
    """The count of `kind` links (reset, confirm) sent to one account, however asked for."""
    return f"{kind}-account:{user_id}"


async def count_request(conn, kind: str, found, typed: str, limit: int, window: int) -> tuple[object, bool]:
    """One request for a `kind` link, in the caller's write transaction: the account `found`
    for `typed` as it is now (locked; None when there is none) and whether it is within its
    `limit` per `window` seconds."""
    user = await queries.lock_user(conn, found.id) if found else None
    key = account_key(kind, user.id) if user else f"{kind}-" + throttle.name_key(typed)
    return user, not await throttle.take(conn, key, limit, window)


async def request_form(template: str, status: int = 200, values: dict | None = None,
                       errors: dict | None = None, **context):
    """The form asking for a link, before anything is sent (or with a problem of what was typed)."""
    return await render(template, status, values=values or {}, errors=errors or {}, sent=False, **context)


async def asked_too_often(template: str, values: dict, why: str, wait: int):
    """The form again: this client address asked too often, and may ask again in `wait` seconds."""
    body, status = await request_form(template, 429, values, {"form": f"{why} Try again in {wait} seconds."})
    return body, status, {"Retry-After": str(wait)}


async def link_sent(template: str):
    """The one answer to a request that was counted, whether or not a link was sent."""
    return await render(template, values={}, errors={}, sent=True)
