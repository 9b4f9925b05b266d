"""Passkeys: adding, renaming and removing them from the profile; signing in with one, without
a password ("Sign in with a passkey") or as the login's second step.

The browser's side of each ceremony is static/passkeys.js: it asks an options route for a
challenge (JSON), lets the authenticator answer, and posts the answer with the form.
"""
import json

from quart import Blueprint, current_app, g

from ..core import audit_trail as audit
from ..core.access import public, signed_in
from ..core.context import client_ip, client_key, form_fields, safe_next, settings
from ..core.render import is_htmx, render, toast
from . import attempts, auth, challenges, factors, mailing, passkeys, queries, second_step, throttle
from .challenges import ChallengeGone
from .profile import profile_page
from .reauthentication import reauthenticated
from .webauthn_ceremony import (
    SECOND_STEP, SIGN_IN, assertion_options, credential_id_of, register, registration_options,
    relying_party, verify_assertion,
)

bp = Blueprint("passkeys", __name__)

SIGN_IN_FORM = "accounts/passkey_sign_in.html"
PASSKEYS_OFF = "Passkeys are off on this site."
NEEDS_SCRIPT = "Adding a passkey needs JavaScript: turn it on for this site and try again."
TOO_MANY = f"You have {passkeys.MOST_PER_ACCOUNT} passkeys, the most an account may have: remove one first."
NOT_SIGNED_IN = "That passkey did not sign you in. Try again, or log in with your password."
PASSKEY_DID_NOT_WORK = "That passkey did not work. Try again, or type a code."
# Challenges a client address may ask for, per window: each is a row until it expires.
SIGN_IN_CHALLENGES_FREE, SIGN_IN_CHALLENGE_WINDOW = 30, 5 * 60


@bp.app_context_processor
def passkeys_enabled():
    return {"passkeys_enabled": relying_party() is not None}


def as_json(body: str, status: int = 200):
    return body, status, {"Content-Type": "application/json"}


def json_error(message: str, status: int, field: str | None = None):
    return as_json(json.dumps({"error": message, "field": field}), status)


# ---- the profile -----------------------------------------------------------------------

def new_name(name: str, count: int) -> str:
    return name or f"Passkey {count + 1}"


@bp.post("/profile/passkeys/options")
@signed_in
async def add_options():
    name = (await form_fields("name"))["name"]
    if relying_party() is None:
        return json_error(PASSKEYS_OFF, 404)
    async with current_app.db.write() as conn:
        count = await passkeys.count_for(conn, g.user.id)
        problem = passkeys.name_problem(new_name(name, count))
        if problem is None and count >= passkeys.MOST_PER_ACCOUNT:
            problem = TOO_MANY
        options = None if problem else await registration_options(conn, g.user)
    if problem:
        return json_error(problem, 422, "name")
    return as_json(options)


@bp.post("/profile/passkeys")
@signed_in
@reauthenticated
async def add():
    values = await form_fields("name", "credential")
    refused = None
    if not values["credential"]:
        refused = NEEDS_SCRIPT
    else:
        async with current_app.db.write() as conn:
            count = await passkeys.count_for(conn, g.user.id)
            name = new_name(values["name"], count)
            refused = passkeys.name_problem(name) or (TOO_MANY if count >= passkeys.MOST_PER_ACCOUNT else None)
            if refused is None:
                added = await register(conn, g.user.id, values["credential"], name)
                refused = added.problem
            if refused is None:
                await audit.record(conn, "passkey_add", "user", g.user.id, actor=g.user, ip=client_ip(),
                                   changes={"passkey": [None, name]})
                await mailing.notice(conn, g.user, "passkey_added", "A passkey was added to your account",
                                     passkey=name)
    if refused:
        return await profile_page(422, passkey_errors={"new": refused}, passkey_names={"new": values["name"]})
    await toast(f"Passkey “{name}” added.")
    return await profile_page(passkey_focus=f"passkey-{added.passkey_id}-name")


@bp.post("/profile/passkeys/<int:passkey_id>/rename")
@signed_in
async def rename(passkey_id: int):
    name = (await form_fields("name"))["name"]
    if problem := passkeys.name_problem(name):
        return await profile_page(422, passkey_errors={passkey_id: problem}, passkey_names={passkey_id: name})
    async with current_app.db.write() as conn:
        old = await passkeys.rename(conn, g.user.id, passkey_id, name)
        if old is not None and old != name:
            await audit.record(conn, "passkey_rename", "user", g.user.id, actor=g.user, ip=client_ip(),
                               changes={"passkey": [old, name]})
    if old is None:
        await toast("That passkey was removed meanwhile.", "warning")
        return await profile_page(passkey_focus="passkeys-title")
    await toast(f"Passkey renamed to “{name}”.")
    return await profile_page(passkey_focus=f"passkey-{passkey_id}-name")


@bp.post("/profile/passkeys/<int:passkey_id>/remove")
@signed_in
@reauthenticated
async def remove(passkey_id: int):
    async with current_app.db.write() as conn:
        name = await passkeys.remove(conn, g.user.id, passkey_id)
        if name is not None:
            await audit.record(conn, "passkey_remove", "user", g.user.id, actor=g.user, ip=client_ip(),
                               changes={"passkey": [name, None]})
    if name is None:
        await toast("That passkey was removed already.", "warning")
    else:
        await toast(f"Passkey “{name}” removed: it no longer signs in to this account.")
    return await profile_page(passkey_focus="passkeys-title")


# ---- signing in ------------------------------------------------------------------------

def too_many_failures(wait: int) -> str:
    return f"Too many failed attempts. Try again in {wait} seconds."


async def refused(status: int, message: str, page, wait: int = 0, **form):
    """Why the passkey did not sign in: beside its button (htmx swaps the passkey form), or
    else on the whole page `page(status, message)` renders."""
    if is_htmx():
        body, status = await render(SIGN_IN_FORM, status, passkey_error=message, **form)
    else:
        body, status = await page(status, message)
    return body, status, {"Retry-After": str(wait)} if wait else {}


@bp.post("/login/passkey/options")
@public
async def sign_in_options():
    if relying_party() is None:
        return json_error(PASSKEYS_OFF, 404)
    async with current_app.db.write() as conn:
        wait = await throttle.take(conn, f"passkey:{client_key()}", SIGN_IN_CHALLENGES_FREE, SIGN_IN_CHALLENGE_WINDOW)
        options = None if wait else await assertion_options(conn, SIGN_IN)
    if wait:
        return json_error(f"Too many attempts from your network. Try again in {wait} seconds.", 429)
    return as_json(options)


def may_sign_in(user) -> bool:
    """What the password login lets in: an active account, not deleted, its invitation accepted
    and, where addresses must be confirmed, its address confirmed."""
    return (user.active and user.deleted_at is None and user.invited_at is None
            and not (settings().require_email_confirmation and user.email_confirmed_at is None))


@bp.post("/login/passkey")
@public
async def sign_in():
    """A passwordless sign-in: the passkey names the account (user verification makes it two
    factors in one). It counts against the login throttle like a password."""
    values = await form_fields("credential", "next")
    next_path = safe_next(values["next"]) or "/dashboard"
    db = current_app.db
    async with db.read() as conn:
        owner = await passkeys.owner_of(conn, credential_id_of(values["credential"]) or "")
    keys = attempts.keys_for(owner) if owner else [f"ip:{client_key()}"]
    config = settings()
    user = None
    async with db.write() as conn:
        wait = await throttle.reserve(conn, keys, config.throttle_free_failures, config.throttle_window)
        if not wait:
            checked = await verify_assertion(conn, SIGN_IN, values["credential"])
            user = await queries.get_user(conn, checked.user_id) if checked.ok else None
            if user is not None and may_sign_in(user):
                await attempts.forgive(conn, keys)
                await auth.finish_login(conn, user, False, factors.PASSKEY)
            else:
                user = None
                await audit.record(conn, "login_failed", "user", checked.user_id, ip=client_ip(),
                                   changes={"factor": [None, factors.PASSKEY],
                                            "problem": [None, checked.problem or "the account may not log in"]})

    def login_page(status, message):
        return auth.login_page(status, next=next_path, error=message)
    if wait:
        return await refused(429, too_many_failures(wait), login_page, wait, next=next_path)
    if user is None:
        return await refused(401, NOT_SIGNED_IN, login_page, next=next_path)
    return await auth.logged_in(user.id, user.username, next_path)


# ---- the login's second step -----------------------------------------------------------

SECOND_STEP_FORM = {"passkey_action": "/login/second-step/passkey",
                    "passkey_options_url": "/login/second-step/passkey/options", "passkey_label": "Use a passkey"}


@bp.post("/login/second-step/passkey/options")
@public
async def second_step_options():
    async with current_app.db.write() as conn:
        challenge = await challenges.pending(conn)
        live = challenge is not None and challenge.stage == challenges.VERIFY and relying_party() is not None
        options = await assertion_options(conn, SECOND_STEP, challenge.user_id) if live else None
    if not live:
        return json_error(second_step.START_AGAIN, 410)
    return as_json(options)


@bp.post("/login/second-step/passkey")
@public
async def second_step_sign_in():
    credential = (await form_fields("credential"))["credential"]
    config = settings()
    try:
        async with current_app.db.write() as conn:
            challenge = await challenges.pending(conn, lock=True)
            if challenge is None or challenge.stage != challenges.VERIFY:
                raise ChallengeGone()
            keys = factors.throttle_keys(challenge.user_id)
            checked = None
            if not (wait := await throttle.reserve(conn, keys, config.throttle_free_failures, config.throttle_window)):
                checked = await verify_assertion(conn, SECOND_STEP, credential, challenge.user_id)
                if checked.ok:
                    await attempts.forgive(conn, keys)
                    await second_step.complete_login(conn, challenge, factors.PASSKEY)
                else:
                    await audit.record(conn, "second_factor_failed", "user", challenge.user_id, ip=client_ip(),
                                       changes={"factor": [None, factors.PASSKEY], "problem": [None, checked.problem]})
    except ChallengeGone:
        return await second_step.start_again()
    def verify_page(status, message):
        return second_step.verify_page(challenge, status, message)
    if wait:
        return await refused(429, too_many_failures(wait), verify_page, wait, **SECOND_STEP_FORM)
    if not checked.ok:
        return await refused(401, PASSKEY_DID_NOT_WORK, verify_page, **SECOND_STEP_FORM)
    return await second_step.finished(challenge)
