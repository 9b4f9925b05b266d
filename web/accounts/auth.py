"""Register, log in and log out."""
from quart import Blueprint, abort, current_app, g, request, session
from quart_auth import AuthUser, login_user, logout_user
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import TooManyRequests

from ..core import audit_trail as audit
from ..core.access import public, signed_in
from ..core.context import client_ip, client_key, form_fields, safe_next, settings
from ..core.render import go, render, requested_block, toast
from . import attempts, challenges, confirmation, factors, mailing, passwords, queries, sessions, throttle
from .devices import device_key, remember_device
from .factor_crypto import keyring
from .validation import EMAIL_TAKEN, USERNAME_TAKEN, account_problems, normalise_email, username_problem

bp = Blueprint("auth", __name__)

LOGIN_FAILED = "Wrong username, email or password."
UNCONFIRMED = "Confirm your email address first: we sent a link to your address when you registered."
UNRECOGNISED = "(unrecognised)"
REGISTRATIONS_PER_HOUR = 10
REGISTRATION_WINDOW_SECONDS = 60 * 60
# "Taken" tells whether an account exists. Each client address gets this many answers that
# say so (checks as one types and submitted forms alike) per throttle window, then waits, with
# the login throttle's back-off.
TAKEN_ANSWERS_FREE = 20
TAKEN_LIMITED = "Too many names and addresses checked from your network."
REGISTER = "accounts/register.html"
# The fields whose problems an inline check's block shows; any other block shows none of them.
CHECK_BLOCK_FIELDS = {"register_username_error": ("username",), "register_email_error": ("email",)}


async def start_session(user_id: int, remember: bool, conn, fresh_csrf: bool = True) -> str:
    """A new session (and cookie) for this browser, replacing the one it had; its token."""
    if g.user:  # logging in again in the same browser replaces the session
        await sessions.end(conn, g.user.session_id, g.user.id)
    token = await sessions.start(conn, user_id, remember, request.headers.get("User-Agent", ""),
                                 client_ip(), settings())
    login_user(AuthUser(token), remember=remember)
    if fresh_csrf:
        session.pop("csrf", None)  # a fresh CSRF token for the new session
    return token


# ---- registration ----------------------------------------------------------------------

def registration_open():
    if not settings().registration_open:
        abort(404)


class RegistrationCap(Exception):
    def __init__(self, wait: int):
        self.wait = wait


def taken_key() -> str:
    return f"taken:{client_key()}"


async def taken_answers_wait() -> int:
    """Seconds until this address may learn again whether a name or address is taken."""
    async with current_app.db.read() as conn:
        return await throttle.seconds_to_wait(conn, [taken_key()])


async def registration_problems(values: dict[str, str]) -> dict[str, str]:
    async with current_app.db.read() as conn:
        problems = await account_problems(conn, values["username"], values["email"], values["password"])
    if values["password_confirm"] != values["password"]:
        problems["password_confirm"] = "The two passwords differ."
    return problems


def says_taken(problems: dict[str, str], fields=("username", "email")) -> bool:
    return problems.get("username") == USERNAME_TAKEN and "username" in fields or \
        problems.get("email") == EMAIL_TAKEN and "email" in fields


async def count_taken_answer() -> None:
    async with current_app.db.write() as conn:
        await throttle.count_attempt(conn, taken_key(), TAKEN_ANSWERS_FREE, settings().throttle_window)


async def registration_answer(status: int, values: dict[str, str], problems: dict[str, str]):
    """The submitted form (or the block htmx asked for) with its problems. Whatever part is
    shown, its status tells whether the account could be made: one that failed because a name
    or address is taken counts against this address."""
    if says_taken(problems):
        await count_taken_answer()
    return await render(REGISTER, status, values=values, errors=problems)


async def too_many(values: dict[str, str], why: str, wait: int):
    """The registration form again, saying why and for how long this address must wait."""
    body, status = await render(REGISTER, 429, values=values,
                                errors={"form": f"{why} Try again in {wait} seconds."})
    return body, status, {"Retry-After": str(wait)}


REGISTER_FIELDS = ("username", "email", "password", "password_confirm")


@bp.get("/register")
@public
async def register_form():
    registration_open()
    if g.user:
        return go("/dashboard")
    return await render(REGISTER, values={}, errors={})


@bp.post("/register/check")
@public
async def register_check():
    """Inline validation: htmx asks for one field's error block as the person types."""
    registration_open()
    if wait := await taken_answers_wait():
        raise TooManyRequests(f"{TAKEN_LIMITED} Try again in {wait} seconds.", retry_after=wait)
    values = await form_fields(*REGISTER_FIELDS)
    problems = await registration_problems(values)
    block = requested_block(REGISTER)
    if says_taken(problems, CHECK_BLOCK_FIELDS.get(block, ("username", "email"))):
        await count_taken_answer()
    return await render(REGISTER, values=values, errors=problems)


@bp.post("/register")
@public
async def register():
    registration_open()
    if g.user:
        return go("/dashboard")
    values = await form_fields(*REGISTER_FIELDS)
    if wait := await taken_answers_wait():
        return await too_many(values, TAKEN_LIMITED, wait)
    problems = await registration_problems(values)
    if problems:
        return await registration_answer(422, values, problems)
    password_hash = await passwords.hash_password(values["password"])
    email, _ = normalise_email(values["email"])
    try:
        async with current_app.db.write() as conn:
            # Taken in the transaction that creates the account: parallel registrations from
            # one network queue on the counter's row, and a failed one gives its place back.
            if wait := await throttle.take(conn, f"register:{client_key()}", REGISTRATIONS_PER_HOUR,
                                           REGISTRATION_WINDOW_SECONDS):
                raise RegistrationCap(wait)
            user_id = await queries.create_user(conn, values["username"], email, password_hash, "Customer")
            await audit.record(conn, "register", "user", user_id, ip=client_ip(),
                               actor=audit.Actor(user_id, values["username"]),
                               changes={"username": [None, values["username"]], "email": [None, email],
                                        "role": [None, "Customer"]})
            user = await queries.get_user(conn, user_id)
            await confirmation.send_link(conn, user)
            stage = None
            if not settings().require_email_confirmation:
                # A role that must have a second factor sets one up first (ENROL).
                if stage := await login_stage(conn, user):
                    await begin_second_step(conn, user, False, "/dashboard", stage)
                else:
                    await start_session(user_id, False, conn)
    except IntegrityError:
        # Someone registered the same name or address since the check above.
        return await registration_answer(422, values, await registration_problems(values))
    except RegistrationCap as cap:
        return await too_many(values, "Too many new accounts from your network.", cap.wait)
    if settings().require_email_confirmation:  # no session until the address is confirmed
        return go("/confirm-email/sent")
    if stage:
        return go(SECOND_STEP[stage])
    await toast("Account created. Welcome to Gatehouse!")
    return go("/dashboard")


# ---- login and logout ------------------------------------------------------------------

async def login_page(status=200, **context):
    context.setdefault("values", {})
    context.setdefault("error", None)
    context["next"] = safe_next(context.get("next"))
    # An htmx answer also refreshes the "send the link again" form beside the login form.
    return await render("accounts/login.html", status, oob=("login_unconfirmed",), **context)


@bp.get("/login")
@public
async def login_form():
    next_path = safe_next(request.args.get("next"))
    if g.user:
        return go(next_path or "/dashboard")
    return await login_page(next=next_path)


def identifier_for_the_log(identifier: str, user) -> str:
    """What a failed login's audit event shows of the name typed: a password typed into the
    name box must never reach the log, which Managers read and export."""
    if user is not None or username_problem(identifier) is None or normalise_email(identifier)[0]:
        return identifier
    return UNRECOGNISED


@bp.post("/login")
@public
async def login():
    values = await form_fields("identifier", "password", "remember", "next")
    identifier, remember = values["identifier"], values["remember"] == "on"
    next_path = safe_next(values["next"]) or "/dashboard"
    db = current_app.db
    async with db.read() as conn:
        user = await queries.find_by_login(conn, identifier) if identifier else None
    keys = attempts.keys_for(user, identifier)
    check = await attempts.check_password(db, keys, values["password"], user.password_hash if user else None)
    if check.wait:
        body, status = await login_page(429, values=values, next=next_path, error=(
            f"Too many failed attempts. Try again in {check.wait} seconds."))
        return body, status, {"Retry-After": str(check.wait)}
    if not (check.valid and user.active and user.deleted_at is None):
        async with db.write() as conn:
            await audit.record(conn, "login_failed", "user", user.id if user else None, ip=client_ip(),
                               changes={"identifier": [None, identifier_for_the_log(identifier, user)]})
        return await login_page(401, values=values, next=next_path, error=LOGIN_FAILED)
    if settings().require_email_confirmation and user.email_confirmed_at is None:
        # The right password: the owner, who may learn why (an invitee confirms by accepting).
        async with db.write() as conn:
            await attempts.forgive(conn, keys)
        return await login_page(403, values=values, next=next_path, error=UNCONFIRMED, unconfirmed=True)
    async with db.write() as conn:
        if check.new_hash:
            await queries.set_password_hash(conn, user.id, check.new_hash)
        await attempts.forgive(conn, keys)
        # Only now, with the right password, may the answer differ for an account with a
        # second factor: the login waits for it (second_step.py), with no session until then.
        if stage := await login_stage(conn, user):
            await begin_second_step(conn, user, remember, next_path, stage)
        else:
            await finish_login(conn, user, remember)
    if stage:
        return go(SECOND_STEP[stage])
    return await logged_in(user.id, user.username, next_path)


SECOND_STEP = {challenges.VERIFY: "/login/second-step", challenges.ENROL: "/login/enrol"}


async def begin_second_step(conn, user, remember: bool, next_path: str, stage: str) -> None:
    """The half-done login of `user`, whose password is right (typed, or just chosen), waiting
    for the second step `stage` (login_stage) in this browser."""
    await challenges.begin(conn, user.id, remember, next_path, stage)
    if stage == challenges.ENROL:
        await factors.start_enrolment(conn, user.id, keyring(settings()))


async def login_stage(conn, user) -> str | None:
    """What the login still needs after the right password: a second factor (VERIFY),
    enrolling one because the account's role must have one (ENROL), or nothing."""
    if await factors.has_factor(conn, user.id):
        return challenges.VERIFY
    if user.role in settings().require_2fa_roles:
        return challenges.ENROL
    return None


async def finish_login(conn, user, remember: bool, factor: str | None = None) -> None:
    """The session, in the write transaction of a login whose every step is done."""
    await queries.record_login(conn, user.id)
    await start_session(user.id, remember, conn)
    await audit.record(conn, "login", "user", user.id, actor=user, ip=client_ip(),
                       changes={"factor": [None, factor]} if factor else None)
    # A browser this account has not logged in from: its owner hears of it (not of the
    # very first login, when no browser is known yet).
    if device_key(user.id) is None and user.last_login_at is not None:
        await mailing.notice(conn, user, "new_login", "New login to your account")


async def logged_in(user_id: int, username: str, next_path: str):
    """The answer to a completed login, once its transaction has committed."""
    remember_device(user_id)
    await toast(f"Welcome back, {username}.")
    return go(next_path)


@bp.post("/logout")
@signed_in
async def logout():
    async with current_app.db.write() as conn:
        await sessions.end(conn, g.user.session_id, g.user.id)
        await audit.record(conn, "logout", "user", g.user.id, actor=g.user, ip=client_ip())
    logout_user()
    session.clear()
    await toast("You have logged out.")
    return go("/")
