"""Cross-site request forgery protection and the security headers of every response."""
import base64
import hmac
import secrets

from quart import abort, current_app, request, session
from werkzeug.routing import IntegerConverter

from .context import client_scheme

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
INT32_MAX = 2**31 - 1  # users.id, users.version, audit target ids: INTEGER columns

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "form-action 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
])

# Features this app never uses, denied to it and to anything it could embed; passkeys
# (WebAuthn) allowed for this site only. Each name is one Chromium knows: an unknown one
# logs a warning on every page.
DENIED_FEATURES = (
    "accelerometer", "autoplay", "browsing-topics", "camera", "display-capture", "encrypted-media",
    "gamepad", "geolocation", "gyroscope", "hid", "idle-detection", "local-fonts", "magnetometer",
    "microphone", "midi", "otp-credentials", "payment", "picture-in-picture", "screen-wake-lock",
    "serial", "usb", "window-management", "xr-spatial-tracking",
)
PERMISSIONS_POLICY = ", ".join([
    *(f"{feature}=()" for feature in DENIED_FEATURES),
    "publickey-credentials-create=(self)",
    "publickey-credentials-get=(self)",
])


def csrf_token() -> str:
    """The synchronizer token of this browser (its secret is kept in the signed session
    cookie), masked afresh for every use: pages are gzipped, and a secret that appeared
    verbatim next to reflected input could be guessed from response sizes (BREACH)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    secret = session["csrf"].encode()
    mask = secrets.token_bytes(len(secret))
    return base64.urlsafe_b64encode(mask + bytes(a ^ b for a, b in zip(mask, secret))).decode()


def unmask(token: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return b""
    half = len(raw) // 2
    return bytes(a ^ b for a, b in zip(raw[:half], raw[half:]))


def same_origin() -> bool:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in {"same-origin", "none"}
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser, or an old one: the token alone decides
    # The scheme as a trusted proxy reports it; the host is the Host header, which the proxy
    # must pass on (X-Forwarded-Host is not believed: Host is what the browser sent).
    return origin == f"{client_scheme()}://{request.host}"


async def check_csrf():
    if request.method in SAFE_METHODS:
        return
    if not same_origin():
        abort(403, "This request came from another site and was refused.")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        sent = (await request.form).get(CSRF_FIELD, "")
    expected = session.get("csrf")
    if not expected or not hmac.compare_digest(unmask(sent), expected.encode()):
        abort(403, "This form has expired. Reload the page and try again.")


# Headers for documents (and workers) only. CSP applies to the document or worker whose own
# response carried it (CSP 3, "Initialize a Document's CSP list" and "... a global object's
# CSP list"); X-Frame-Options and Cross-Origin-Opener-Policy are read from navigation
# responses, Permissions-Policy when a document is made from one (HTML, Permissions Policy).
# A stylesheet or a page's script ignores all four: ~730 bytes of each for nothing. An SVG
# opened directly is a document, and the live worker takes its CSP from its own response:
# both keep them.
SUBRESOURCE_TYPES = {"text/css", "text/javascript", "application/javascript"}
WORKER_SCRIPTS = {"live-worker.js"}


def is_document(response) -> bool:
    """Whether the answer may become a document or a worker (anything but a static stylesheet
    or page script)."""
    return (request.endpoint != "static" or response.mimetype not in SUBRESOURCE_TYPES
            or (request.view_args or {}).get("filename") in WORKER_SCRIPTS)


async def add_headers(response):
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"
    if is_document(response):
        headers.setdefault("Content-Security-Policy", CSP)
        headers["X-Frame-Options"] = "DENY"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        headers["Permissions-Policy"] = PERMISSIONS_POLICY
    if request.endpoint != "static":
        # One URL answers with a page or a fragment: caches must keep them apart.
        headers.add("Vary", "HX-Request")
        # Whoever asks, signed in or not (a visitor's form carries a CSRF token tied to
        # their cookie; a failed session check leaves no g.user): only static files are kept.
        headers["Cache-Control"] = "no-store"
    else:
        del headers["Expires"]  # Cache-Control's max-age overrides it (RFC 9111, 5.3)
    if current_app.config["GATEHOUSE"].production:
        headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    return response


NUL_REFUSED = ("The text sent contains a NUL character (\\0), which cannot be stored. "
               "Remove it and try again.")


async def refuse_nul():
    """PostgreSQL text cannot hold NUL (SQLite would store it and cut it short elsewhere):
    refuse it in any query argument, form field or path segment, before anything uses it."""
    form = await request.form if request.method not in SAFE_METHODS else {}
    items = [*request.args.items(multi=True), *(form.items(multi=True) if form else ()),
             *((request.view_args or {}).items())]
    if any("\0" in key or (isinstance(value, str) and "\0" in value) for key, value in items):
        abort(422, NUL_REFUSED)


class Int32Converter(IntegerConverter):
    """<int:...> in routes, bounded to the database's INTEGER: a larger id in a URL is a
    404, not an overflow error in the driver."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", INT32_MAX)
        super().__init__(map, *args, **kwargs)


def init_app(app):
    # Before any blueprint adds its routes, which compile their converters then.
    app.url_map.converters["int"] = Int32Converter
    app.before_request(refuse_nul)
    app.before_request(check_csrf)
    app.after_request(add_headers)
    app.add_template_global(csrf_token)
