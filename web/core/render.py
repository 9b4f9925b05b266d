"""One template, two answers: the whole page, or only the block htmx asked for.

Blocks are named after the element id they fill, with '-' written as '_'
(`<tbody id="users-rows">` is `{% block users_rows %}`).
"""
import inspect
import json

from jinja2 import Environment
from jinja2_fragments import render_block
from quart import current_app, flash, g, get_flashed_messages, redirect, request, session

# Jinja's default number of compiled templates kept.
TEMPLATES_KEPT = 400


def templates() -> Environment:
    """The app's templates, compiled for plain (synchronous) rendering. Quart compiles them for
    async rendering, where every call, filter and macro in a template goes through an
    awaitable check: a quarter of the CPU of rendering the users page (docs/PERFORMANCE.md,
    "Peers"). Nothing a template calls here is async (globals, filters and context
    processors are plain functions), and rendering never awaited anything, so the loop is held
    no longer than before. Made once per app, after its setup: an overlay shares the loader,
    globals and filters, with a cache of its own."""
    app = current_app._get_current_object()
    if (env := app.extensions.get("templates")) is None:
        env = app.extensions["templates"] = app.jinja_env.overlay(enable_async=False, cache_size=TEMPLATES_KEPT)
    return env


async def add_processors_context(context: dict) -> None:
    """What the app's context processors add to `context` (what it names itself wins), as
    Quart's update_template_context does, except that a plain function is called here: Quart
    sends each one to a worker thread and back, which costs far more than the functions (who
    is signed in, whether passkeys work here, the live stream's position), four per page."""
    app = current_app._get_current_object()
    extra = {}
    for blueprint in (None, *reversed(request.blueprints)):
        for processor in app.template_context_processors[blueprint]:
            values = processor()
            extra.update(await values if inspect.isawaitable(values) else values)
    context.update({**extra, **context})


async def render_template(template: str, **context) -> str:
    await add_processors_context(context)
    return templates().get_template(template).render(context)


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def requested_block(template: str) -> str | None:
    """The block htmx targets, when this request wants a fragment of `template`."""
    if not is_htmx() or request.headers.get("HX-Boosted") or request.headers.get("HX-History-Restore-Request"):
        return None
    target = request.headers.get("HX-Target", "")
    block = target.replace("-", "_")
    if block and block in templates().get_template(template).blocks:
        return block
    return None


async def render(template: str, status: int = 200, block: str | None = None,
                 oob: tuple[str, ...] = (), **context):
    """The page, or the block named by `block` or by htmx's HX-Target.

    A fragment also carries the blocks named in `oob`, rendered with `oob_swap` set so that
    their element says hx-swap-oob: what else the change made stale on the page.
    """
    block = block or requested_block(template)
    if not block:
        return await render_template(template, **context), status
    await add_processors_context(context)
    parts = [render_block(templates(), template, block, **context)]
    for extra in oob:
        parts.append(render_block(templates(), template, extra, oob_swap=True, **context))
    return "".join(parts), status


async def toast(message: str, level: str = "success", undo: str | None = None) -> None:
    """A message for the toast region, shown by this answer or, after a redirect, the next page.
    `undo` is the URL a POST to which takes the action back."""
    g.setdefault("toasts", []).append({"level": level, "text": message, "undo": undo})


def pending_toasts() -> list[dict]:
    """The toasts to show now, once: those an earlier answer left (it redirected) and this one's."""
    items = [{"level": level, **message} for level, message in get_flashed_messages(with_categories=True)]
    return items + g.pop("toasts", [])


async def deliver_toasts(response):
    """Toasts not shown by the page itself: an htmx fragment carries them in HX-Trigger; an
    answer that sends the browser elsewhere leaves them in the session for the next page.
    Only those touch the session cookie."""
    if "toasts" not in g and "_flashes" not in session:
        return response
    if is_htmx() and "HX-Redirect" not in response.headers and "HX-Location" not in response.headers:
        if items := pending_toasts():
            events = json.loads(response.headers.get("HX-Trigger", "{}") or "{}")
            events["toast"] = {"items": items}
            response.headers["HX-Trigger"] = json.dumps(events)
    else:
        for item in g.pop("toasts", []):
            await flash({"text": item["text"], "undo": item["undo"]}, item["level"])
    return response


def go(url: str):
    """Navigate after a successful form: htmx loads the page without a reload, else a 303."""
    if is_htmx():
        return "", 200, {"HX-Location": url}
    return redirect(url, 303)
