"""Password recovery: "Forgot password?" mails a link; the link's form sets a new password.

Asking for a link answers the same page, with the same status, whatever was typed: a name or
address of no account, or of an account that may not reset (deactivated, deleted, invited,
or over its limit). Both paths do the same work in one write transaction (the address's count,
the account's or the typed name's count, an audit event); the link's mail joins that
transaction when there is an account to send it to, and the outbox sends it afterwards, so
no answer waits for an SMTP server. Only a client address that asks too often is told so
(429), which says nothing about any account.

A reset does not log the person in: it ends every session of the account and sends them to
the login page. The link proves only that they can read the account's mailbox; once second
factors exist (issue 14) the login asks for them, and a reset that opened a session itself
would go around them. With one way into a session, that guarantee holds in one place.

A link dies when it is used, when a newer one is asked for, when the password changes by any
means, and when the account is deactivated, deleted or invited (tokens.py). Opening it (GET)
only shows the form: mail scanners follow links.
"""
from datetime import timedelta

from quart import Blueprint, current_app

from ..core import audit_trail as audit
from ..core.access import public
from ..core.context import client_ip, client_key, form_fields
from ..core.render import go, render, toast
from . import challenges, link_requests, mailing, passwords, queries, sessions, throttle, tokens
from .auth import identifier_for_the_log
from .devices import device_key, remember_device

bp = Blueprint("recovery", __name__)

FORGOT = "accounts/forgot_password.html"
RESET = "accounts/reset_password.html"
PER_ADDRESS, ADDRESS_WINDOW = 5, 15 * 60
PER_ACCOUNT, ACCOUNT_WINDOW = 3, 60 * 60
IDENTIFIER_MAX = 254
LINK_MINUTES = tokens.LIFETIMES[tokens.RESET] // timedelta(minutes=1)
ADDRESS_LIMITED = "Too many reset requests from your network."
NO_IDENTIFIER = "Type your username or email address."


class AddressLimit(Exception):
    def __init__(self, wait: int):
        self.wait = wait


def may_reset(user) -> bool:
    """Whether a link may be sent to this account (tokens.py refuses the others' links too)."""
    return user.active and user.deleted_at is None and user.invited_at is None


async def request_reset(conn, found, identifier: str) -> None:
    """One request for a link, in the caller's write transaction: counted against the client's
    address (AddressLimit when it has asked too often) and the account (or the name typed),
    audited, and the link mailed when the account may reset and is within its limit."""
    if wait := await throttle.take(conn, f"reset:{client_key()}", PER_ADDRESS, ADDRESS_WINDOW):
        raise AddressLimit(wait)
    user, within_limit = await link_requests.count_request(conn, "reset", found, identifier, PER_ACCOUNT,
                                                           ACCOUNT_WINDOW)
    if user is None:
        await audit.record(conn, "password_reset_requested", "user", None, ip=client_ip(),
                           changes={"identifier": [None, identifier_for_the_log(identifier, None)]})
        return
    mailed = within_limit and may_reset(user)
    if mailed:
        token = await tokens.issue(conn, user, tokens.RESET)
        await mailing.send(conn, "reset", user.email, "Reset your password", token=token, path="reset-password",
                           username=user.username, minutes=LINK_MINUTES, **mailing.circumstances())
    await audit.record(conn, "password_reset_requested", "user", user.id, ip=client_ip(),
                       changes={"mailed": [None, mailed]})


@bp.get("/forgot-password")
@public
async def forgot_form():
    return await link_requests.request_form(FORGOT)


@bp.post("/forgot-password")
@public
async def forgot():
    values = await form_fields("identifier")
    identifier = values["identifier"]
    if not identifier:
        return await link_requests.request_form(FORGOT, 422, values, {"identifier": NO_IDENTIFIER})
    db = current_app.db
    async with db.read() as conn:
        found = await queries.find_by_login(conn, identifier) if len(identifier) <= IDENTIFIER_MAX else None
    try:
        async with db.write() as conn:
            await request_reset(conn, found, identifier)
    except AddressLimit as limit:
        return await link_requests.asked_too_often(FORGOT, values, ADDRESS_LIMITED, limit.wait)
    return await link_requests.link_sent(FORGOT)


async def invalid_link():
    """One answer for every link that does not work (unknown, used, expired, replaced, its
    account changed): which it was is nobody's business."""
    return await render(RESET, 410, account=None, token="", errors={})


@bp.get("/reset-password/<token>")
@public
async def reset_form(token: str):
    async with current_app.db.read() as conn:
        found = await tokens.find(conn, token, tokens.RESET)
    if found is None:
        return await invalid_link()
    return await render(RESET, account=found.user, token=token, errors={})


def password_problems(values: dict[str, str], user) -> dict[str, str]:
    errors = {}
    if message := passwords.problem(values["password"], user.username, user.email):
        errors["password"] = message
    if values["password_confirm"] != values["password"]:
        errors["password_confirm"] = "The two passwords differ."
    return errors


@bp.post("/reset-password/<token>")
@public
async def reset(token: str):
    values = await form_fields("password", "password_confirm")
    db = current_app.db
    async with db.read() as conn:
        found = await tokens.find(conn, token, tokens.RESET)
    if found is None:
        return await invalid_link()
    if errors := password_problems(values, found.user):
        return await render(RESET, 422, account=found.user, token=token, errors=errors)
    password_hash = await passwords.hash_password(values["password"])
    async with db.write() as conn:
        # The account's row first, as every write of an account takes it (a deactivation then
        # revokes its tokens): the token second, used up here or by nobody.
        await queries.lock_user(conn, found.user.id)
        used = await tokens.use(conn, token, tokens.RESET)
        if used is not None:
            await apply_reset(conn, used, password_hash)
    if used is None:  # a parallel submit, a newer link or a change came first
        return await invalid_link()
    remember_device(used.user.id)
    await toast("Password changed. Log in with your new password.")
    return go("/login")


async def apply_reset(conn, used: tokens.Found, password_hash: str) -> None:
    """The new password, in the transaction that used the token: every session ended, the
    account's login lock lifted, audited, and its owner told."""
    user = used.user
    await queries.set_password_hash(conn, user.id, password_hash)
    ended = await sessions.end_all(conn, user.id)
    await challenges.end_all(conn, user.id)
    # The owner may log in at once: the account's lock goes, and this browser is counted apart
    # from everyone else from now on (its device cookie), whatever its network's failures.
    await throttle.clear(conn, f"account:{user.id}")
    if device := device_key(user.id):
        await throttle.clear(conn, device)
    await audit.record(conn, "password_reset", "user", user.id, actor=user, ip=client_ip(),
                       changes={"sessions_ended": [None, ended]})
    await mailing.notice(conn, user, "password_changed", "Your password was changed", via_reset=True)
