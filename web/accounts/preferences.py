"""A person's own settings: the theme, and whether single keys act as shortcuts (WCAG 2.1.4
Character Key Shortcuts). Kept per account and rendered on <html> of every page (base.html),
so the first paint already has them; a form in the profile changes them, with or without
JavaScript, and the palette's "Toggle theme" posts the same form."""
import json
from dataclasses import replace

from quart import Blueprint, current_app, g, request

from ..core import audit_trail as audit
from ..core.access import signed_in
from ..core.context import client_ip
from ..core.render import go, is_htmx, render, toast
from . import queries
from .profile import profile_page

bp = Blueprint("preferences", __name__)

THEMES = ("system", "light", "dark")  # labelled in accounts/preferences.html
FORM = "accounts/preferences.html"


def chosen(form) -> tuple[dict, dict]:
    """(the preferences the form sent, the problems with them). An unchecked box is absent."""
    values = {"theme": form.get("theme", ""), "single_key_shortcuts": form.get("single_key_shortcuts") == "1"}
    return values, {} if values["theme"] in THEMES else {"theme": "Choose one of the three themes."}


def applied(values: dict) -> dict:
    """The HX-Trigger event app.js applies to <html> when htmx saved the form (no page load)."""
    return {"preferences": {"theme": values["theme"], "singleKeyShortcuts": values["single_key_shortcuts"]}}


@bp.post("/profile/preferences")
@signed_in
async def save():
    values, errors = chosen(await request.form)
    if errors:
        if is_htmx():
            return await render(FORM, 422, block="profile_preferences", preference_values=values,
                                preference_errors=errors)
        return await profile_page(422, preference_values=values, preference_errors=errors)
    async with current_app.db.write() as conn:
        account = await queries.lock_user(conn, g.user.id)
        changes = audit.diff({name: getattr(account, name) for name in values}, values)
        if changes:
            await queries.set_preferences(conn, g.user.id, values)
            await audit.record(conn, "preferences", "user", g.user.id, actor=g.user, ip=client_ip(),
                               changes=changes)
    g.user = replace(g.user, **values)
    await toast("Preferences saved.")
    if not is_htmx():
        return go("/profile")
    body, status = await render(FORM, block="profile_preferences")
    return body, status, {"HX-Trigger": json.dumps(applied(values))}
