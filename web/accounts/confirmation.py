"""Email addresses proven by a link: the one a new account registers with (its link sent
again on request), a new address the owner moves to, and the old address's report that a
change was not its owner's.

Opening a link (GET) only shows a button: mail scanners follow links; submitting it (POST)
uses the token up (tokens.py). Every link that does not work gets one page, whatever the
reason (unknown, used, expired, replaced, its account changed).

What the answers say: asking for the link again answers the same for any address (one that
needs confirming, one that does not, none). A change of address answers "link sent" whether
or not another account has the new address, and leaves the same traces the person asking can
see: the pending change on the profile, the notice in the old inbox. A taken address gets
a short note instead of the link, so its owner learns why nothing comes and the person who
typed it learns nothing. Registration's "taken" is the one answer left that says an address
has an account (README).

Asking for links is not audited: it changes no account (a new link replaces the one before),
and the outbox keeps a row per message sent (recipient, kind, time). Anyone may ask on the
public form, so an event per request would let visitors write the audit log at will.
"""
from quart import Blueprint, current_app, g, session
from quart_auth import logout_user
from sqlalchemy.exc import IntegrityError

from ..core import audit_trail as audit
from ..core.access import public, signed_in
from ..core.context import client_ip, client_key, form_fields, safe_next
from ..core.db import utcnow
from ..core.render import go, is_htmx, render, toast
from . import challenges, link_requests, mailing, queries, sessions, throttle, tokens
from .validation import normalise_email

bp = Blueprint("confirmation", __name__)

LINK = "accounts/confirm_link.html"
RESEND = "accounts/confirm_resend.html"
BANNER = "accounts/confirm_banner.html"
HOUR = 60 * 60
# Confirmation links one account is sent per hour, however they are asked for.
LINKS_PER_ACCOUNT = 3
# "Send the link again", from one client address (IPv6: per /64).
ASKS_PER_CLIENT, ASK_WINDOW = 5, 15 * 60
ASKS_LIMITED = "Too many links asked for from your network."
# Changes of address asked for by one account, and to one new address from all accounts (each
# sends a message there and one to the old address).
CHANGES_PER_ACCOUNT, CHANGES_PER_ADDRESS = 5, 3
CHANGES_LIMITED = "Too many changes of address asked for."


def valid_for(purpose: str) -> str:
    """A link's lifetime in words, for its message."""
    hours = int(tokens.LIFETIMES[purpose].total_seconds() // 3600)
    return f"{hours // 24} days" if hours > 24 and hours % 24 == 0 else f"{hours} hours"


def needs_confirming(user) -> bool:
    """A live account whose address is not confirmed yet; not an invitation (accepting it
    confirms the address)."""
    return user.email_confirmed_at is None and user.invited_at is None and user.active and user.deleted_at is None


async def send_link(conn, user) -> None:
    """A link to confirm the account's address (the one before it dies), in the caller's write
    transaction: registration's, or a request for another."""
    token = await tokens.issue(conn, user, tokens.CONFIRM)
    await mailing.send(conn, "confirm", user.email, "Confirm your email address", token=token,
                       path="confirm-email", username=user.username, valid_for=valid_for(tokens.CONFIRM))


async def use_link(conn, token: str, purpose: str) -> tokens.Found | None:
    """The link's token used up in the caller's write transaction, its account's row locked
    first (as every write of an account takes it); None when it does not work."""
    found = await tokens.find(conn, token, purpose)
    if found is None:
        return None
    await queries.lock_user(conn, found.user.id)
    return await tokens.use(conn, token, purpose)


async def invalid_link(purpose: str):
    return await render(LINK, 410, purpose=purpose, state="invalid", valid_for=valid_for(purpose))


async def link_form(token: str, purpose: str):
    """A link's page: the button that uses it, or the one page for a link that does not work."""
    async with current_app.db.read() as conn:
        found = await tokens.find(conn, token, purpose)
    if found is None:
        return await invalid_link(purpose)
    return await render(LINK, purpose=purpose, state="form", token=token, email=found.email, account=found.user)


# ---- confirming the address an account registered with ---------------------------------

@bp.get("/confirm-email/<token>")
@public
async def confirm_form(token: str):
    return await link_form(token, tokens.CONFIRM)


@bp.post("/confirm-email/<token>")
@public
async def confirm(token: str):
    async with current_app.db.write() as conn:
        used = await use_link(conn, token, tokens.CONFIRM)
        if used is not None:
            await queries.confirm_email(conn, used.user.id, used.email)
            await audit.record(conn, "email_confirmed", "user", used.user.id, actor=used.user, ip=client_ip(),
                               changes={"email_confirmed": [None, used.email]})
    if used is None:
        return await invalid_link(tokens.CONFIRM)
    await toast("Your email address is confirmed." + ("" if g.user else " You can log in now."))
    return go("/dashboard" if g.user else "/login")


# ---- the link again ----------------------------------------------------------------------

async def asks_wait(conn) -> int:
    """Seconds before this client address may ask for a link again; 0 when it may now (and the
    request is counted)."""
    return await throttle.take(conn, f"confirm-ask:{client_key()}", ASKS_PER_CLIENT, ASK_WINDOW)


@bp.post("/confirm-email/send")
@signed_in
async def send_again():
    """The banner's button: a new link to the signed-in account's address."""
    back = safe_next((await form_fields("back"))["back"]) or "/dashboard"
    wait = 0
    async with current_app.db.write() as conn:
        user = await queries.lock_user(conn, g.user.id)
        if needs_confirming(user):
            wait = await asks_wait(conn) or \
                await throttle.take(conn, link_requests.account_key("confirm", user.id), LINKS_PER_ACCOUNT, HOUR)
            if not wait:
                await send_link(conn, user)
    status = 200
    if not needs_confirming(user):
        await toast("Your email address is already confirmed.")
        note = None
    elif wait:
        status, note = 429, f"Too many links asked for. Try again in {wait} seconds."
        await toast(note, "error")
    else:
        note = f"We sent a new link to {user.email}."
        await toast(note)
    if not is_htmx():
        return go(back)
    if note is None:
        return "", status  # confirmed meanwhile: the banner goes
    return await render(BANNER, status, block="confirm_banner", note=note, back=back)


async def resend_to(conn, email: str) -> None:
    """A new link for the account with this address, if it needs one and is within its limit
    (counted the same whoever it is: link_requests.py)."""
    found = await queries.find_by_login(conn, email)
    user, within_limit = await link_requests.count_request(conn, "confirm", found, email, LINKS_PER_ACCOUNT, HOUR)
    if user is not None and within_limit and needs_confirming(user):
        await send_link(conn, user)


@bp.get("/confirm-email/sent")
@public
async def registered():
    """Where a new account lands when addresses must be confirmed before logging in."""
    return await link_requests.request_form(RESEND, registered=True)


@bp.get("/confirm-email/resend")
@public
async def resend_form():
    return await link_requests.request_form(RESEND)


@bp.post("/confirm-email/resend")
@public
async def resend():
    values = await form_fields("email")
    email, problem = normalise_email(values["email"])
    if problem:
        return await link_requests.request_form(RESEND, 422, values, {"email": problem})
    async with current_app.db.write() as conn:
        # Counted for every address typed, known or not: the only refusal, and it says
        # nothing about any account.
        if not (wait := await asks_wait(conn)):
            await resend_to(conn, email)
    if wait:
        return await link_requests.asked_too_often(RESEND, values, ASKS_LIMITED, wait)
    return await link_requests.link_sent(RESEND)


# ---- a change of address -----------------------------------------------------------------

async def change_limit(conn, user_id: int, email: str) -> int:
    """Seconds before this account may ask to move to this address; 0 when it may now (and the
    request is counted)."""
    return await throttle.take(conn, f"email-change:{user_id}", CHANGES_PER_ACCOUNT, HOUR) or \
        await throttle.take(conn, "email-change-to:" + throttle.name_key(email), CHANGES_PER_ADDRESS, HOUR)


async def request_change(conn, user, email: str) -> None:
    """`user` (its row locked) asks to move to `email`: a link to the new address, a notice
    with a report link to the old one, the pending change recorded. When another account has
    the address, that address gets a note instead of the link (the pending change is recorded
    all the same, so the profile shows the same), and confirming would refuse anyway."""
    token = await tokens.issue(conn, user, tokens.EMAIL, email=email)
    holder = await queries.find_by_login(conn, email)
    if holder is not None and holder.id != user.id:
        await mailing.send(conn, "email_change_taken", holder.email, "Someone tried to use your address",
                           when=mailing.circumstances()["when"])
    else:
        await mailing.send(conn, "email_change", email, "Confirm your new email address", token=token,
                           path="confirm-email-change", username=user.username, valid_for=valid_for(tokens.EMAIL))
    report = await tokens.issue(conn, user, tokens.REPORT)
    await mailing.notice(conn, user, "email_change_requested", "A change of your email address was asked for",
                         new=email, change_valid_for=valid_for(tokens.EMAIL), token=report,
                         path="report-email-change", valid_for=valid_for(tokens.REPORT))
    await audit.record(conn, "email_change_requested", "user", user.id, actor=user, ip=client_ip(),
                       changes={"requested_email": [None, email]})


async def pending_change(conn, user_id: int):
    """The change of address waiting for its link (address, created_at), or None."""
    pending = await tokens.pending(conn, user_id, tokens.EMAIL)
    return pending if pending is not None and pending.expires_at > utcnow() else None


async def cancel_change(conn, user) -> bool:
    """Drops the account's pending change of address, if any (audited)."""
    if not await tokens.revoke(conn, user.id, tokens.EMAIL):
        return False
    await audit.record(conn, "email_change_cancelled", "user", user.id, actor=user, ip=client_ip())
    return True


async def move_address(conn, used: tokens.Found) -> bool:
    """The account's address becomes the one the link was sent to, confirmed, and the old
    address hears of it with a report link; False when another account has it now."""
    user, new = used.user, used.email
    if await queries.email_taken(conn, new, except_id=user.id):
        return False
    # Made before the change: a report link stays valid for a change confirmed after it.
    report = await tokens.issue(conn, user, tokens.REPORT)
    await queries.confirm_email(conn, user.id, new)
    await audit.record(conn, "update", "user", user.id, actor=user, ip=client_ip(),
                       changes={"email": [user.email, new]})
    await mailing.notice(conn, user, "email_changed", "Your email address was changed", to=user.email,
                         old=user.email, new=new, reported=False, token=report, path="report-email-change",
                         valid_for=valid_for(tokens.REPORT))
    return True


@bp.get("/confirm-email-change/<token>")
@public
async def change_form(token: str):
    return await link_form(token, tokens.EMAIL)


@bp.post("/confirm-email-change/<token>")
@public
async def confirm_change(token: str):
    used = None
    try:
        async with current_app.db.write() as conn:
            used = await use_link(conn, token, tokens.EMAIL)
            moved = used is not None and await move_address(conn, used)
    except IntegrityError:  # PostgreSQL: another account took the address after the check
        moved = False
    if used is None:
        return await invalid_link(tokens.EMAIL)
    if not moved:
        return await render(LINK, 409, purpose=tokens.EMAIL, state="taken")
    await toast(f"Your email address is now {used.email}." + ("" if g.user else " You can log in with it."))
    return go("/profile" if g.user else "/login")


# ---- "it was not me": the old address reports a change -----------------------------------

async def secure(conn, used: tokens.Found) -> dict:
    """What a report does, in the transaction that used its token: the old address back if the
    change went through (the reporter proved they read it, and a password reset must reach
    them, not whoever moved the address), every pending change and link ended, every session
    ended, audited; the address replaced hears of it."""
    user, old = used.user, used.email
    restored = None
    if old.lower() != user.email.lower():
        restored = not await queries.email_taken(conn, old, except_id=user.id)
        if restored:
            await queries.confirm_email(conn, user.id, old)
    cancelled = await tokens.revoke(conn, user.id, tokens.EMAIL, tokens.REPORT, tokens.RESET)
    ended = await sessions.end_all(conn, user.id)
    await challenges.end_all(conn, user.id)
    changes = {"sessions_ended": [None, ended]}
    if restored:
        changes["email"] = [user.email, old]
    await audit.record(conn, "email_change_reported", "user", user.id, actor=user, ip=client_ip(), changes=changes)
    if restored:
        await mailing.notice(conn, user, "email_changed", "Your email address was set back", to=user.email,
                             old=user.email, new=old, reported=True)
    return {"account": user, "old": old, "restored": restored, "cancelled": cancelled, "ended": ended}


@bp.get("/report-email-change/<token>")
@public
async def report_form(token: str):
    return await link_form(token, tokens.REPORT)


@bp.post("/report-email-change/<token>")
@public
async def report(token: str):
    used = None
    try:
        async with current_app.db.write() as conn:
            used = await use_link(conn, token, tokens.REPORT)
            outcome = used and await secure(conn, used)
    except IntegrityError:  # PostgreSQL: another account took the old address meanwhile
        return await render(LINK, 409, purpose=tokens.REPORT, state="busy", token=token, email=used.email,
                            account=used.user)
    if used is None:
        return await invalid_link(tokens.REPORT)
    if g.user and g.user.id == used.user.id:  # this browser's session ended with the others
        logout_user()
        session.clear()
        g.user = None
    return await render(LINK, purpose=tokens.REPORT, state="done", **outcome)
