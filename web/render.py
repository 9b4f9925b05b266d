"""One template, two answers: the whole page, or only the block htmx asked for.

Blocks are named after the element id they fill, with '-' written as '_'
(`<tbody id="users-rows">` is `{% block users_rows %}`).
"""
import json

from jinja2_fragments.quart import render_block
from quart import current_app, flash, get_flashed_messages, render_template, request


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def requested_block(template: str) -> str | None:
    """The block htmx targets, when this request wants a fragment of `template`."""
    if not is_htmx() or request.headers.get("HX-Boosted") or request.headers.get("HX-History-Restore-Request"):
        return None
    target = request.headers.get("HX-Target", "")
    block = target.replace("-", "_")
    if block and block in current_app.jinja_env.get_template(template).blocks:
        return block
    return None


async def render(template: str, status: int = 200, block: str | None = None, **context):
    """The page, or the block named by `block` or by htmx's HX-Target."""
    block = block or requested_block(template)
    if block:
        body = await render_block(template, block, **context)
    else:
        body = await render_template(template, **context)
    return body, status


async def toast(message: str, level: str = "success") -> None:
    """A message for the toast region: in the next page rendered, or in HX-Trigger."""
    await flash(message, level)


def toasts_to_header(response):
    """After an htmx fragment, the toasts the page did not render travel as an event."""
    if not is_htmx() or "HX-Redirect" in response.headers or "HX-Location" in response.headers:
        return response
    items = [{"level": level, "message": message}
             for level, message in get_flashed_messages(with_categories=True)]
    if items:
        events = json.loads(response.headers.get("HX-Trigger", "{}") or "{}")
        events["toast"] = {"items": items}
        response.headers["HX-Trigger"] = json.dumps(events)
    return response
