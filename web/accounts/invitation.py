"""Invitations: the link an Admin or Manager mails to an account they create, and the
invitee's own page at that link, where they choose a password and are signed in.

An invited account has no usable password (passwords.UNUSABLE) until then: it cannot log in,
a reset cannot be sent to it, and it is no active Admin for the last-Admin guard.
"""
from datetime import datetime, timedelta

from quart import Blueprint, current_app

from ..core import audit_trail as audit
from ..core.access import public
from ..core.context import client_ip, form_fields, settings
from ..core.db import utcnow
from ..core.render import go, render, toast
from . import mailing, passwords, queries, tokens
from .auth import SECOND_STEP, begin_second_step, login_stage, start_session
from .devices import remember_device

bp = Blueprint("invitation", __name__)

PAGE = "accounts/invitation.html"
SUBJECT = "You are invited to Gatehouse"
DIFFERENT = "The two passwords differ."
# The page shows the invitee's name: a cache (or the browser's back button after logging out)
# must not keep it, as it keeps no authenticated page.
NO_STORE = {"Cache-Control": "no-store"}


def expiry_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


async def send(conn, user, inviter: str, now: datetime | None = None) -> datetime:
    """Issues `user`'s invitation and mails its link to the account's address, in the caller's
    write transaction; a newer invitation ends the link of the one before. Returns when it
    expires (INVITATION_DAYS from now)."""
    now = now or utcnow()
    lifetime = timedelta(days=settings().invitation_days)
    token = await tokens.issue(conn, user, tokens.INVITE, lifetime=lifetime, now=now)
    await mailing.send(conn, "invite", user.email, SUBJECT, token=token, path="invitation",
                       username=user.username, inviter=inviter, role=user.role,
                       expires=expiry_text(now + lifetime))
    return now + lifetime


def invitee_of(found):
    """Whom a valid token invites: nobody once the account is deactivated (tokens.py lets an
    invitation live as long as the account waits on it)."""
    return found.user if found is not None and found.user.active else None


class Invalid(Exception):
    """The invitation is not (or no longer) valid: nothing it would have done is written."""


async def page(token: str, invitee=None, status: int = 200, errors: dict | None = None):
    """The invitee's form, or (no `invitee`) the one answer for a link that opens nothing:
    unknown, expired, replaced, revoked or already accepted look the same."""
    body, status = await render(PAGE, status if invitee else 410, token=token, invitee=invitee,
                                errors=errors or {})
    return body, status, NO_STORE


@bp.get("/invitation/<token>")
@public
async def invitation_form(token: str):
    """Only shows the form: mail scanners open links, and opening one uses nothing up."""
    async with current_app.db.read() as conn:
        found = await tokens.find(conn, token, tokens.INVITE)
    return await page(token, invitee_of(found))


@bp.post("/invitation/<token>")
@public
async def accept(token: str):
    """The invitee's password, under the policy; the token is used up in the transaction that
    sets it, so of two submissions at once exactly one succeeds. The invitee is then signed
    in: a new account has no second factor yet, so a password is all a login would ask, unless
    its role must have one (REQUIRE_2FA_ROLES): then it sets one up first, as at a login."""
    values = await form_fields("password", "password_confirm")
    async with current_app.db.read() as conn:
        found = await tokens.find(conn, token, tokens.INVITE)
    invitee = invitee_of(found)
    if invitee is None:
        return await page(token)
    errors = {}
    if message := passwords.problem(values["password"], invitee.username, invitee.email):
        errors["password"] = message
    elif values["password_confirm"] != values["password"]:
        errors["password_confirm"] = DIFFERENT
    if errors:
        return await page(token, invitee, 422, errors)
    password_hash = await passwords.hash_password(values["password"])
    try:
        async with current_app.db.write() as conn:
            invitee = invitee_of(await tokens.use(conn, token, tokens.INVITE))
            if invitee is None:
                raise Invalid
            await queries.accept_invitation(conn, invitee.id, password_hash)
            await audit.record(conn, "invite_accepted", "user", invitee.id, actor=invitee, ip=client_ip(),
                               changes={"invited": [True, False]})
            # A role that must have a second factor sets one up before any session (ENROL).
            if stage := await login_stage(conn, invitee):
                await begin_second_step(conn, invitee, False, "/dashboard", stage)
            else:
                await queries.record_login(conn, invitee.id)
                await start_session(invitee.id, False, conn)
    except Invalid:
        return await page(token)
    if stage:
        return go(SECOND_STEP[stage])
    remember_device(invitee.id)
    await toast(f"Welcome to Gatehouse, {invitee.username}: your password is set and you are signed in.")
    return go("/dashboard")
