"""The command palette's pages and actions (partials/palette.html, static/palette.js).

Each one names the route it uses, and the palette offers it only to a person whom that route
lets in (access.py's declarations): the palette can never offer what someone may not do, and
a route that does not exist here (/mail in production) is never offered either.
"""
from dataclasses import dataclass

from quart import current_app, g
from werkzeug.exceptions import HTTPException

from .access import ANONYMOUS


@dataclass(frozen=True)
class Command:
    label: str
    path: str
    method: str = "GET"
    kind: str = "Page"
    keys: tuple[str, ...] = ()  # its shortcut, shown beside it; one key: a single-key shortcut
    run: str = ""               # palette.js: "" goes to path; "theme" toggles it; "logout"
    click: str = ""             # the page's own control for it, used when the page has one


COMMANDS = (
    Command("Dashboard", "/dashboard"),
    Command("Users", "/users"),
    Command("Audit log", "/audit"),
    Command("Import users from CSV", "/users/import"),
    Command("Mail outbox", "/mail"),
    Command("Profile and preferences", "/profile"),
    Command("New user", "/users/new", kind="Action", keys=("n",), click="[data-action=new]"),
    Command("Export the audit log (CSV)", "/audit.csv", kind="Action"),
    Command("Toggle theme (light or dark)", "/profile/preferences", "POST", kind="Action", run="theme"),
    Command("Log out", "/logout", "POST", kind="Action", run="logout"),
)


def may(method: str, path: str) -> bool:
    """Whether the signed-in person (or a visitor) may use this route."""
    return _role_may(g.user.role if g.get("user") else ANONYMOUS, method, path)


def _role_may(role: str, method: str, path: str) -> bool:
    try:
        endpoint, _ = current_app.url_map.bind("localhost").match(path, method=method)
    except HTTPException:  # no such route here, or not with this method
        return False
    return role in getattr(current_app.view_functions[endpoint], "allowed_roles", ())


def commands() -> list[Command]:
    """The palette's commands for the person's role: the same for every page a role sees, so
    matched against the routes once per role and app rather than on every page drawn."""
    role = g.user.role if g.get("user") else ANONYMOUS
    offered = current_app.extensions.setdefault("palette", {})
    if role not in offered:
        offered[role] = [command for command in COMMANDS if _role_may(role, command.method, command.path)]
    return offered[role]


def init_app(app) -> None:
    app.add_template_global(commands, "palette_commands")
    app.add_template_global(may)
