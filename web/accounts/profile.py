"""A signed-in person's own profile: email, password and sessions."""
from dataclasses import replace

from quart import Blueprint, current_app, g

from ..core import audit_trail as audit
from ..core.access import signed_in
from ..core.context import client_ip, form_fields
from ..core.formatting import counted
from ..core.render import render, toast
from . import attempts, challenges, confirmation, factors, mailing, passwords, queries, sessions
from . import passkeys
from .auth import start_session
from .reauthentication import proven, reauthenticated
from .validation import normalise_email

bp = Blueprint("profile", __name__)

async def profile_page(status=200, **context):
    async with current_app.db.read() as conn:
        context["account"] = await queries.get_user(conn, g.user.id)
        context["sessions"] = await sessions.list_for(conn, g.user.id)
        context["pending_email"] = await confirmation.pending_change(conn, g.user.id)
        context["passkeys"] = await passkeys.list_for(conn, g.user.id)
        context["factor_status"] = await factors.get_status(conn, g.user.id)
    context.setdefault("email_values", {})
    context.setdefault("email_errors", {})
    context.setdefault("password_errors", {})
    return await render("accounts/profile.html", status, **context)


@bp.get("/profile")
@signed_in
async def profile():
    return await profile_page()


async def current_password_problem(password: str) -> str | None:
    """Why the "current password" typed is refused, or None. Throttled like a login (a stolen
    session must not be a way to guess the password) and each wrong one audited."""
    db = current_app.db
    async with db.read() as conn:
        account = await queries.get_user(conn, g.user.id)
    keys = attempts.keys_for(account)
    check = await attempts.check_password(db, keys, password, account.password_hash)
    if check.wait:
        return f"Too many wrong passwords. Try again in {check.wait} seconds."
    async with db.write() as conn:
        if check.valid:
            await attempts.forgive(conn, keys)
            await proven(conn)  # a sensitive action needs no other proof for a while
        else:
            await audit.record(conn, "password_failed", "user", g.user.id, actor=g.user, ip=client_ip())
    return None if check.valid else "That is not your current password."


@bp.post("/profile/email")
@signed_in
async def change_email():
    """Asks to move to a new address: it changes when the link sent there is opened
    (confirmation.py). The answer is the same whether or not another account has it."""
    values = await form_fields("email", "current_password")
    email, problem = normalise_email(values["email"])
    errors = {"email": problem} if problem else {}
    if not errors and (problem := await current_password_problem(values["current_password"])):
        errors["current_password"] = problem
    if errors:
        return await profile_page(422, email_values=values, email_errors=errors)
    if email == g.user.email:
        await toast("That is already your email address.", "warning")
        return await profile_page()
    async with current_app.db.write() as conn:
        if not (wait := await confirmation.change_limit(conn, g.user.id, email)):
            await confirmation.request_change(conn, await queries.lock_user(conn, g.user.id), email)
    if wait:
        return await profile_page(429, email_values=values, email_errors={
            "email": f"{confirmation.CHANGES_LIMITED} Try again in {wait} seconds."})
    await toast(f"We sent a confirmation link to {email}.")
    return await profile_page(email_sent=email)


@bp.post("/profile/email/cancel")
@signed_in
async def cancel_email_change():
    async with current_app.db.write() as conn:
        cancelled = await confirmation.cancel_change(conn, g.user)
    await toast("The change of address is cancelled." if cancelled else "No change of address was waiting.",
                "success" if cancelled else "warning")
    return await profile_page()


async def renew_session(conn) -> None:
    """This browser's session under a new token, remembered as before: a copy of the cookie
    taken before the password changed dies with the old session. The CSRF token stays, so the
    page keeps working."""
    token = await start_session(g.user.id, g.user.remember, conn, fresh_csrf=False)
    g.user = replace(g.user, session_id=sessions.session_id(token))


@bp.post("/profile/password")
@signed_in
async def change_password():
    values = await form_fields("current_password", "password", "password_confirm")
    errors = {}
    if message := passwords.problem(values["password"], g.user.username, g.user.email):
        errors["password"] = message
    elif values["password"] == values["current_password"]:
        errors["password"] = "The new password must differ from the current one."
    if values["password_confirm"] != values["password"]:
        errors["password_confirm"] = "The two passwords differ."
    if problem := await current_password_problem(values["current_password"]):
        errors["current_password"] = problem
    if errors:
        return await profile_page(422, password_errors=errors)
    password_hash = await passwords.hash_password(values["password"])
    async with current_app.db.write() as conn:
        await queries.set_password_hash(conn, g.user.id, password_hash)
        ended = await sessions.end_others(conn, g.user.id, keep_sid=g.user.session_id)
        await challenges.end_all(conn, g.user.id)
        await renew_session(conn)
        await audit.record(conn, "password_change", "user", g.user.id, actor=g.user, ip=client_ip(),
                           changes={"sessions_ended": [None, ended]})
        await mailing.notice(conn, g.user, "password_changed", "Your password was changed", via_reset=False)
    await toast("Password changed." + (f" {counted(ended, 'other session')} ended." if ended else ""))
    return await profile_page(oob=("profile_sessions",))


@bp.post("/profile/sessions/<sid>/end")
@signed_in
@reauthenticated
async def end_session(sid: str):
    async with current_app.db.write() as conn:
        ended = await sessions.end(conn, sid, g.user.id) if sid != g.user.session_id else 0
        if ended:
            await audit.record(conn, "session_end", "user", g.user.id, actor=g.user, ip=client_ip())
    await toast("Session ended." if ended else "That session had already ended.", "success" if ended else "warning")
    return await profile_page()


@bp.post("/profile/sessions/end-others")
@signed_in
@reauthenticated
async def end_other_sessions():
    async with current_app.db.write() as conn:
        ended = await sessions.end_others(conn, g.user.id, keep_sid=g.user.session_id)
        if ended:
            await audit.record(conn, "session_end", "user", g.user.id, actor=g.user, ip=client_ip(),
                               changes={"sessions_ended": [None, ended]})
    await toast(f"{counted(ended, 'other session')} ended." if ended else "There were no other sessions.")
    return await profile_page()
