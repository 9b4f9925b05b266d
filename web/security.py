"""Cross-site request forgery protection and the security headers of every response."""
import hmac
import secrets

from quart import abort, current_app, g, request, session

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"

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


def csrf_token() -> str:
    """The synchronizer token of this browser, kept in the signed session cookie."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _same_origin() -> bool:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in {"same-origin", "none"}
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser, or an old one: the token alone decides
    return origin == f"{request.scheme}://{request.host}"


async def check_csrf():
    if request.method in SAFE_METHODS:
        return
    if not _same_origin():
        abort(403, "This request came from another site and was refused.")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        sent = (await request.form).get(CSRF_FIELD, "")
    expected = session.get("csrf")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(403, "This form has expired. Reload the page and try again.")


async def add_headers(response):
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"
    headers["X-Frame-Options"] = "DENY"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.endpoint != "static":
        # One URL answers with a page or a fragment: caches must keep them apart.
        headers.add("Vary", "HX-Request")
        if getattr(g, "user", None) is not None:
            headers["Cache-Control"] = "no-store"
    if current_app.config["GATEHOUSE"].production:
        headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    return response


def init_app(app):
    app.before_request(check_csrf)
    app.after_request(add_headers)
    app.add_template_global(csrf_token)
