"""The login's second step: after the right password, a code from the authenticator app or a
recovery code (other factors plug in: complete_login), or, for a role that must have a second
factor and has none yet, setting one up first (REQUIRE_2FA_ROLES).

The half-done login lives in challenges.py; these pages answer only to the browser that holds
it, and send any other to the login page: nothing here tells whether an account has a factor.
"""
import time

from markupsafe import Markup
from quart import Blueprint, current_app

from ..core import audit_trail as audit
from ..core.access import public
from ..core.context import client_ip, form_fields, settings
from ..core.render import go, render, toast
from . import challenges, factors, mailing, queries, totp
from .auth import finish_login, logged_in
from .challenges import ChallengeGone
from .devices import remember_device
from .factor_crypto import keyring

bp = Blueprint("second_step", __name__)

VERIFY_PAGE = "accounts/second_step.html"
ENROL_PAGE = "accounts/enrol.html"
NO_CODE = "Type the 6-digit code from your app, or one of your recovery codes."
WRONG_CODE = "That code is not right, or was used already. Codes change every 30 seconds."
START_AGAIN = "Your login took longer than 5 minutes, or ended. Log in again."


def clock() -> float:
    """Now, in Unix seconds, for every code check (tests set FACTOR_CLOCK to choose the time)."""
    return current_app.config.get("FACTOR_CLOCK", time.time)()


async def complete_login(conn, challenge: challenges.Challenge, factor: str):
    """In the write transaction that checked a factor: the challenge used up (ChallengeGone
    when a parallel request was first) and the session started, audited with the factor.
    Returns the account's row."""
    await challenges.consume(conn, challenge)
    user = await queries.get_user(conn, challenge.user_id)
    await finish_login(conn, user, challenge.remember, factor)
    return user


async def finished(challenge: challenges.Challenge):
    """The answer once complete_login's transaction has committed."""
    return await logged_in(challenge.user_id, challenge.username, challenge.next_path or "/dashboard")


async def start_again():
    await toast(START_AGAIN, "warning")
    return go("/login")


async def current(stage: str) -> challenges.Challenge | None:
    async with current_app.db.read() as conn:
        challenge = await challenges.pending(conn)
    return challenge if challenge and challenge.stage == stage else None


# ---- a code ----------------------------------------------------------------------------

async def verify_page(challenge, status=200, error=None):
    async with current_app.db.read() as conn:
        kinds = await factors.kinds(conn, challenge.user_id)
    return await render(VERIFY_PAGE, status, challenge=challenge, kinds=kinds, error=error)


@bp.get("/login/second-step")
@public
async def verify_form():
    if (challenge := await current(challenges.VERIFY)) is None:
        return await start_again()
    return await verify_page(challenge)


@bp.post("/login/second-step")
@public
async def verify():
    code = (await form_fields("code"))["code"]
    try:
        async with current_app.db.write() as conn:
            challenge = await challenges.pending(conn, lock=True)
            if challenge is None or challenge.stage != challenges.VERIFY:
                raise ChallengeGone()
            if not code:
                verdict = None
            else:
                verdict = await factors.verify_second_factor(conn, challenge.user_id, code, clock())
                if verdict.ok:
                    await complete_login(conn, challenge, verdict.factor)
                elif not verdict.wait:
                    await audit.record(conn, "second_factor_failed", "user", challenge.user_id, ip=client_ip())
    except ChallengeGone:
        return await start_again()
    if verdict is None:
        return await verify_page(challenge, 422, NO_CODE)
    if verdict.wait:
        body, status = await verify_page(challenge, 429, too_many_codes(verdict.wait))
        return body, status, {"Retry-After": str(verdict.wait)}
    if not verdict.ok:
        return await verify_page(challenge, 401, WRONG_CODE)
    if verdict.factor == factors.RECOVERY:
        await toast(recovery_codes_left(verdict.recovery_left), "warning")
    return await finished(challenge)


def recovery_codes_left(left: int) -> str:
    if left == 0:
        return "That was your last recovery code: make new ones in your profile now."
    return (f"Recovery code used: {left} left. If you lost your phone, set up the app again "
            "in your profile and make new codes.")


# ---- enrolling, when the role requires it ----------------------------------------------

def setup_for(secret: str, username: str) -> dict:
    """What the page shows to set up the app: the QR code (inline SVG, no user data in it but
    the code's modules) and the secret as text."""
    return {"qr": Markup(totp.qr_svg(totp.provisioning_uri(secret, username))), "secret": totp.grouped(secret)}


async def enrol_page(challenge, status=200, **context):
    if "codes" not in context:
        async with current_app.db.read() as conn:
            secret = await factors.pending_secret(conn, challenge.user_id, keyring(settings()))
        if secret is None:  # set up meanwhile, or cancelled from a session: start again
            return await start_again()
        context["setup"] = setup_for(secret, challenge.username)
    async with current_app.db.read() as conn:
        role = (await queries.get_user(conn, challenge.user_id)).role
    return await render(ENROL_PAGE, status, challenge=challenge, role=role,
                        next=challenge.next_path or "/dashboard", **context)


@bp.get("/login/enrol")
@public
async def enrol_form():
    if (challenge := await current(challenges.ENROL)) is None:
        return await start_again()
    return await enrol_page(challenge)


@bp.post("/login/enrol")
@public
async def enrol():
    code = (await form_fields("code"))["code"]
    try:
        async with current_app.db.write() as conn:
            challenge = await challenges.pending(conn, lock=True)
            if challenge is None or challenge.stage != challenges.ENROL:
                raise ChallengeGone()
            codes, wait = await enrolment_code(conn, challenge.user_id, code)
            if codes:
                user = await complete_login(conn, challenge, factors.TOTP)
                await record_enrolment(conn, user, user)
    except ChallengeGone:
        return await start_again()
    if wait:
        return await enrol_page(challenge, 429, error=too_many_codes(wait))
    if not codes:
        return await enrol_page(challenge, 422, error=WRONG_CODE if code else NO_CODE)
    remember_device(challenge.user_id)
    await toast("Your authenticator app is set up.")
    return await enrol_page(challenge, codes=codes)


def too_many_codes(wait: int) -> str:
    return f"Too many wrong codes. Try again in {wait} seconds."


async def enrolment_code(conn, user_id: int, code: str) -> tuple[list[str] | None, int]:
    """The code typed to confirm a new app, checked under the codes' throttle (whoever holds
    the password or the session must not guess it), a wrong one audited: the new recovery
    codes or None, and the seconds to wait when locked. An empty field counts for nothing."""
    if not code:
        return None, 0
    codes, wait = await factors.confirm_enrolment_throttled(conn, user_id, code, keyring(settings()), clock())
    if not codes and not wait:
        await audit.record(conn, "second_factor_failed", "user", user_id, ip=client_ip(),
                           changes={"factor": [None, factors.TOTP]})
    return codes, wait


async def record_enrolment(conn, user, actor) -> None:
    """An app enrolled: audited, and its owner told by mail (someone holding only the password
    of an account that had to enrol could have done it)."""
    await audit.record(conn, "second_factor_added", "user", user.id, actor=actor, ip=client_ip(),
                       changes={"factor": [None, factors.TOTP]})
    await mailing.notice(conn, user, "factors_changed", "A second factor was added to your account",
                         change="added")
