"""Who may use which route: every view declares it, and anything undeclared is refused.

Who the visitor is (g.user) comes from the accounts feature's session check."""
from urllib.parse import urlencode

from quart import abort, current_app, g, redirect, request

from .render import is_htmx
from .tables import ROLES

ANONYMOUS = "anonymous"


def allow(*roles: str):
    unknown = set(roles) - {ANONYMOUS, *ROLES}
    if unknown:
        raise ValueError(f"unknown roles {unknown}")

    def declare(view):
        view.allowed_roles = frozenset(roles)
        return view
    return declare


public = allow(ANONYMOUS, *ROLES)
signed_in = allow(*ROLES)
staff = allow("Admin", "Manager")


def login_url(next_path: str | None = None) -> str:
    return "/login?" + urlencode({"next": next_path}) if next_path else "/login"


def to_login():
    """Send an anonymous visitor to the login page, coming back here afterwards."""
    if request.method == "GET":
        back = request.full_path.rstrip("?")
    else:
        back = request.headers.get("HX-Current-URL", "").partition(request.host)[2] or None
    url = login_url(back)
    if is_htmx():
        # A login form must never be swapped into a table cell: the browser goes there.
        return "", 401, {"HX-Redirect": url}
    return redirect(url)


async def enforce():
    if request.endpoint is None or request.endpoint == "static":
        return None
    allowed = getattr(current_app.view_functions[request.endpoint], "allowed_roles", None)
    if allowed is None:
        abort(403)  # deny by default
    role = g.user.role if g.user else ANONYMOUS
    if role in allowed:
        return None
    if g.user is None:
        return to_login()
    abort(403)


def init_app(app, load_user):
    """`load_user` sets g.user (None for a visitor) for `enforce` to judge. Both run before
    CSRF is checked, so that an expired session answers with the login page."""
    app.before_request_funcs.setdefault(None, [])[:0] = [load_user, enforce]
    app.context_processor(lambda: {"user": g.get("user")})
