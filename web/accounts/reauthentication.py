"""Re-authentication ("sudo mode", issue 14): a sensitive action needs a proof, no older than
WINDOW, that the person at the keyboard owns the account: a login, or the password typed again,
or one of the account's second factors (its app's code, an unused recovery code, a passkey).

A guarded view wears @reauthenticated, or calls `await required()` where only part of what it
does is sensitive (an inline edit that changes a role). Without a recent proof the view does
not run: the answer asks for one and carries the request as it came, its form fields as
hidden inputs under a signature bound to this session, method and URL, valid for WINDOW. The
form sends the same fields to the same URL with a fresh CSRF token and the proof; `required()`
checks the signature and the proof (throttled like a login, audited either way), marks the
session, and the same view runs on the same data. Fields that differ from the signed ones,
another session's signature or an old one are refused (400).

htmx gets the form in a dialog (static/reauthenticate.js opens it) that targets the original
request's target, outerHTML (every guarded fragment here is the element its id names), so the
resumed answer lands where the first would have. Without JavaScript the form is a page, and
the view's own redirect follows it. A guarded GET (an export) cannot be sent again with a
body: its form posts to /reauthenticate, which answers with a page that starts the download.

A form that carries a password proves itself with its "current password" (the profile's
changes): a password never travels in the hidden fields.
"""
from dataclasses import dataclass
from datetime import UTC, timedelta
from functools import wraps
from urllib.parse import urlsplit

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer
from quart import Blueprint, abort, current_app, g, request

from ..core import audit_trail as audit
from ..core.access import signed_in
from ..core.context import client_ip, safe_next, settings
from ..core.db import utcnow
from ..core.formatting import counted
from ..core.render import is_htmx, render, toast
from ..core.security import CSRF_FIELD
from . import attempts, factors, queries, recovery_codes, sessions, throttle
from .second_step import clock as factor_clock
from .webauthn_ceremony import REAUTH, assertion_options, relying_party, verify_assertion

bp = Blueprint("reauthentication", __name__)

WINDOW = timedelta(minutes=10)
PROOF, SIGNED = "reauth_proof", "reauth_pending"
# A passkey's answer comes in the field static/passkeys.js fills, beside this mark.
PASSKEY, CREDENTIAL = "reauth_passkey", "credential"
NOT_RESENT = {CSRF_FIELD, PROOF, SIGNED}
CODES = {factors.TOTP, factors.RECOVERY}
TEMPLATE = "accounts/reauthenticate.html"
WRONG = "That is not your password."
EMPTY = "Type your password to go on."
WRONG_CODE = "That code did not work. Type a current code from your app, or an unused recovery code."
PASSKEY_FAILED = "That passkey did not work. Try again, or type your password."
EXPIRED = "This confirmation has expired or does not belong to this request. Start the action again."

# What "now" is for the freshness of a proof: tests move it instead of waiting.
clock = utcnow


@dataclass(frozen=True)
class Pending:
    """The request waiting for a proof, as it came."""
    method: str
    url: str  # path and query string
    target: str  # the id of the element htmx was to swap ("" when none)
    back: str  # where Cancel goes without JavaScript
    fields: tuple[tuple[str, str], ...]  # the form, minus its CSRF token


class Reauthenticate(Exception):
    """The view stops here: the answer asks for a proof (again, saying why, with `error`)."""

    def __init__(self, pending: Pending, error: str | None = None, status: int = 401, wait: int = 0):
        super().__init__(error)
        self.pending, self.error, self.status, self.wait = pending, error, status, wait


class ClockedSigner(TimestampSigner):
    """Signatures dated by `clock`, so that they age with the proofs they wait for."""

    def get_timestamp(self) -> int:
        return int(clock().replace(tzinfo=UTC).timestamp())


def signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt=f"gatehouse reauthentication {g.user.session_id}",
                                  signer=ClockedSigner)


def this_url() -> str:
    query = request.query_string.decode("latin-1")
    return request.path + ("?" + query if query else "")


def resent_fields(form) -> tuple[tuple[str, str], ...]:
    proof = NOT_RESENT | {PASSKEY, CREDENTIAL} if PASSKEY in form else NOT_RESENT
    # Browsers send a field's line breaks as CRLF whatever the page held.
    return tuple((name, value.replace("\r\n", "\n")) for name, value in form.items(multi=True)
                 if name not in proof)


def came_from() -> str:
    """The page this request came from, when it is one of ours; else the dashboard."""
    referrer = urlsplit(request.referrer or "")
    if referrer.netloc != request.host:
        return "/dashboard"
    return safe_next(referrer.path + ("?" + referrer.query if referrer.query else "")) or "/dashboard"


async def this_request() -> Pending:
    target = request.headers.get("HX-Target", "") if is_htmx() else ""
    return Pending(request.method, this_url(), target, came_from(), resent_fields(await request.form))


def signed(pending: Pending) -> str:
    return signer().dumps([pending.method, pending.url, pending.target, pending.back, pending.fields])


def unsigned(token: str) -> Pending:
    """The pending request a signature vouches for; 400 when it is forged, another session's
    or older than WINDOW."""
    try:
        method, url, target, back, fields = signer().loads(token, max_age=WINDOW.total_seconds())
    except (BadData, ValueError, TypeError):
        abort(400, EXPIRED)
    return Pending(method, url, target, back, tuple(tuple(pair) for pair in fields))


async def resumed(form) -> Pending:
    """The request resumed by this one, which must be the same request: method, URL, fields."""
    pending = unsigned(form.get(SIGNED, ""))
    if (pending.method, pending.url) != (request.method, this_url()) or \
            sorted(pending.fields) != sorted(resent_fields(form)):
        abort(400, EXPIRED)
    return pending


# ---- the proof ---------------------------------------------------------------------------

async def recent(conn) -> bool:
    proven_at = await sessions.reauthenticated_at(conn, g.user.session_id)
    return proven_at is not None and proven_at > clock() - WINDOW


def looks_like_code(proof: str) -> bool:
    return recovery_codes.looks_like_totp(proof) or recovery_codes.normalise(proof) is not None


def too_many(pending: Pending, wait: int) -> Reauthenticate:
    return Reauthenticate(pending, f"Too many wrong attempts. Try again in {wait} seconds.", 429, wait)


async def prove(pending: Pending, form) -> None:
    """Checks the proof the form brings: a passkey's answer, or the text typed: the password,
    or, for an account with an authenticator app, what looks like one of its codes. Each is
    counted by its throttle before the check, and audited; a right one marks the session,
    otherwise the form comes again, saying why."""
    if PASSKEY in form:
        return await prove_passkey(pending, form.get(CREDENTIAL, ""))
    proof = form.get(PROOF, "")
    if not proof.strip():
        raise Reauthenticate(pending, EMPTY, 422)
    db = current_app.db
    async with db.read() as conn:
        account = await queries.get_user(conn, g.user.id)
        if looks_like_code(proof) and await factors.kinds(conn, g.user.id) & CODES:
            return await prove_code(pending, proof)
    keys = attempts.keys_for(account)
    check = await attempts.check_password(db, keys, proof, account.password_hash)
    if check.wait:
        raise too_many(pending, check.wait)
    async with db.write() as conn:
        if check.valid:
            await attempts.forgive(conn, keys)
        await settle(conn, check.valid, "password")
    if not check.valid:
        raise Reauthenticate(pending, WRONG)


async def prove_code(pending: Pending, code: str) -> None:
    """An authenticator app's code or a recovery code, under the second step's rules (a used
    step or code refused, throttled apart from passwords)."""
    async with current_app.db.write() as conn:
        verdict = await factors.verify_second_factor(conn, g.user.id, code, factor_clock())
        if not verdict.wait:
            kind = factors.TOTP if recovery_codes.looks_like_totp(code) else factors.RECOVERY
            await settle(conn, verdict.ok, verdict.factor or kind)
    if verdict.wait:
        raise too_many(pending, verdict.wait)
    if not verdict.ok:
        raise Reauthenticate(pending, WRONG_CODE)
    if verdict.factor == factors.RECOVERY:
        await toast(f"Recovery code used: {counted(verdict.recovery_left, 'code')} left.", "warning")


async def prove_passkey(pending: Pending, credential: str) -> None:
    """A passkey's answer to a challenge made for this account's re-authentication, throttled
    like its codes."""
    config, keys = settings(), factors.throttle_keys(g.user.id)
    async with current_app.db.write() as conn:
        if not (wait := await throttle.reserve(conn, keys, config.throttle_free_failures, config.throttle_window)):
            checked = await verify_assertion(conn, REAUTH, credential, g.user.id)
            if checked.ok:
                await attempts.forgive(conn, keys)
            await settle(conn, checked.ok, factors.PASSKEY)
    if wait:
        raise too_many(pending, wait)
    if not checked.ok:
        raise Reauthenticate(pending, PASSKEY_FAILED)


async def proven(conn) -> None:
    """The person behind this session just proved it is them (a password, a code or a passkey
    checked in this transaction): sensitive actions need no other proof for WINDOW."""
    await sessions.mark_reauthenticated(conn, g.user.session_id, clock())


async def settle(conn, right: bool, factor: str) -> None:
    """The outcome of a proof asked for here, in the transaction of its check: audited, and a
    right one counts from now."""
    if right:
        await proven(conn)
    await audit.record(conn, "reauthenticate" if right else "reauthenticate_failed", "user", g.user.id,
                       actor=g.user, ip=client_ip(), changes={"factor": [None, factor]})


async def required(when: bool = True) -> None:
    """Returns when this session proved who it is within WINDOW, or this request brings such a
    proof (checked, then recorded), or `when` says that what it asks is not sensitive;
    otherwise raises Reauthenticate, whose answer asks for one."""
    if not when:
        return
    form = await request.form
    if SIGNED in form:
        await prove(await resumed(form), form)
        return
    async with current_app.db.quick() as conn:  # one row by its key
        if await recent(conn):
            return
    raise Reauthenticate(await this_request())


def reauthenticated(view):
    """The view runs only after a recent proof (see `required`)."""
    @wraps(view)
    async def guarded(*args, **kwargs):
        await required()
        return await view(*args, **kwargs)
    return guarded


# ---- the answers ---------------------------------------------------------------------------

async def ask(asked: Reauthenticate):
    """The form asking for a proof: in a dialog for htmx (a first answer adds it to the page, a
    wrong proof replaces its form), else a page of its own."""
    pending = asked.pending
    in_dialog = is_htmx() and not request.headers.get("HX-Boosted") and pending.method != "GET"
    async with current_app.db.read() as conn:
        kinds = await factors.kinds(conn, g.user.id)
    # Asked again (a wrong proof): the signature the request came with, ageing from the first ask.
    token = (await request.form).get(SIGNED) or signed(pending)
    context = {"pending": pending, "signed": token, "error": asked.error, "in_dialog": in_dialog,
               "action": pending.url if pending.method != "GET" else "/reauthenticate",
               "minutes": int(WINDOW.total_seconds() // 60), "with_code": bool(kinds & CODES),
               # A guarded form of its own passkey (adding one) keeps its field: no passkey proof then.
               "with_passkey": factors.PASSKEY in kinds and relying_party() is not None
               and CREDENTIAL not in dict(pending.fields)}
    headers = {"Retry-After": str(asked.wait)} if asked.wait else {}
    if not in_dialog:
        boosted = is_htmx()  # then the page's main region replaces this one's
        body, status = await render(TEMPLATE, asked.status, block="main" if boosted else None, **context)
        if boosted:
            headers.update({"HX-Retarget": "#main", "HX-Reswap": "innerHTML"})
        return body, status, headers
    if SIGNED in await request.form:
        body, status = await render(TEMPLATE, asked.status, block="reauth_form", **context)
        return body, status, {**headers, "HX-Retarget": "#reauth-form", "HX-Reswap": "outerHTML"}
    body, status = await render(TEMPLATE, asked.status, block="reauth_dialog", **context)
    return body, status, {**headers, "HX-Retarget": "#main", "HX-Reswap": "beforeend"}


@bp.post("/reauthenticate")
@signed_in
async def confirm_link():
    """The proof for a guarded link (GET): then a page that follows the link (a download)."""
    form = await request.form
    pending = unsigned(form.get(SIGNED, ""))
    if pending.method != "GET":
        abort(400, EXPIRED)
    await prove(pending, form)
    body, status = await render(TEMPLATE, block=None, pending=pending, resumed=True)
    return body, status, {"Refresh": f"0; url={pending.url}"}


@bp.post("/reauthenticate/passkey/options")
@signed_in
async def passkey_options():
    """A challenge for this account's passkeys (JSON for static/passkeys.js)."""
    if relying_party() is None:
        abort(404, "Passkeys are off on this site.")
    async with current_app.db.write() as conn:
        options = await assertion_options(conn, REAUTH, g.user.id)
    return options, 200, {"Content-Type": "application/json"}


def init_app(app) -> None:
    app.register_error_handler(Reauthenticate, ask)
    app.register_blueprint(bp)
