"""The profile's second factor: set up an authenticator app, make new recovery codes, turn it
off. Each change is audited and its owner told by mail. Every answer is the profile, or (htmx)
its second-factor section (the block profile_factors)."""
from quart import Blueprint, current_app, g

from ..core import audit_trail as audit
from ..core.access import signed_in
from ..core.context import client_ip, form_fields, settings
from ..core.render import toast
from . import factors, mailing, queries
from .factor_crypto import keyring
from .profile import profile_page
from .reauthentication import reauthenticated
from .second_step import NO_CODE, WRONG_CODE, enrolment_code, record_enrolment, setup_for, too_many_codes

bp = Blueprint("factor_settings", __name__)

REQUIRED = "Your role requires a second factor: add a passkey before removing the app."


@bp.post("/profile/factors/totp")
@signed_in
@reauthenticated
async def start():
    async with current_app.db.write() as conn:
        secret = await factors.start_enrolment(conn, g.user.id, keyring(settings()))
    if secret is None:
        await toast("An authenticator app is already set up.", "warning")
        return await profile_page()
    return await profile_page(totp_setup=setup_for(secret, g.user.username))


@bp.post("/profile/factors/totp/confirm")
@signed_in
@reauthenticated  # its answers show the waiting secret, and the codes: not to a stale copy of the cookie
async def confirm():
    code = (await form_fields("code"))["code"]
    ring = keyring(settings())
    async with current_app.db.write() as conn:
        codes, wait = await enrolment_code(conn, g.user.id, code)
        if codes:
            await record_enrolment(conn, await queries.get_user(conn, g.user.id), g.user)
        else:
            secret = await factors.pending_secret(conn, g.user.id, ring)
    if codes:
        await toast("Your authenticator app is set up.")
        return await profile_page(new_codes=codes)
    if secret is None:
        await toast("Nothing was waiting to be set up: start again.", "warning")
        return await profile_page(409)
    return await profile_page(429 if wait else 422, totp_setup=setup_for(secret, g.user.username),
                               factor_error=too_many_codes(wait) if wait else WRONG_CODE if code else NO_CODE)


@bp.post("/profile/factors/totp/cancel")
@signed_in
async def cancel():
    async with current_app.db.write() as conn:
        await factors.cancel_enrolment(conn, g.user.id)
    return await profile_page()


@bp.post("/profile/factors/recovery-codes")
@signed_in
@reauthenticated
async def new_recovery_codes():
    async with current_app.db.write() as conn:
        if has := await factors.has_factor(conn, g.user.id):
            codes = await factors.replace_recovery_codes(conn, g.user.id, keyring(settings()))
            await audit.record(conn, "recovery_codes_replaced", "user", g.user.id, actor=g.user, ip=client_ip())
            await mailing.notice(conn, g.user, "factors_changed", "New recovery codes for your account",
                                 change="codes")
    if not has:
        await toast("Set up an authenticator app first.", "warning")
        return await profile_page(409)
    await toast("New recovery codes made; the old ones no longer work.")
    return await profile_page(new_codes=codes)


class StillRequired(Exception):
    """Removing the app would leave an account whose role requires a second factor without one."""


@bp.post("/profile/factors/remove")
@signed_in
@reauthenticated
async def remove():
    """The authenticator app and its recovery codes go (passkeys stay: they have their own
    list). An account whose role requires a second factor keeps the app unless it has a passkey."""
    try:
        async with current_app.db.write() as conn:
            if removed := await factors.remove_app(conn, g.user.id):
                if g.user.role in settings().require_2fa_roles and not await factors.has_factor(conn, g.user.id):
                    raise StillRequired()
                await audit.record(conn, "second_factor_removed", "user", g.user.id, actor=g.user, ip=client_ip(),
                                   changes={"factor": [factors.TOTP, None]})
                await mailing.notice(conn, g.user, "factors_changed", "The authenticator app of your account was removed",
                                     change="removed")
    except StillRequired:
        await toast(REQUIRED, "error")
        return await profile_page(403)
    await toast("Authenticator app removed, and its recovery codes." if removed else "No authenticator app was set up.",
                "success" if removed else "warning")
    return await profile_page()
