"""Pages and fragments render through a plain (synchronous) twin of Quart's template
environment (web/core/render.py): a quarter less CPU for the users page."""
import inspect

from web.core import render


async def test_templates_render_synchronously_and_call_nothing_async(app):
    """An async function called from a template would print '<coroutine …>' instead of its
    value: none may be a global, filter or test."""
    async with app.test_request_context("/"):  # where the globals g, request and session resolve
        env = render.templates()
        callables = {**env.globals, **env.filters, **env.tests}
        assert [name for name, value in callables.items() if inspect.iscoroutinefunction(value)] == []
    assert not env.is_async and env.globals is app.jinja_env.globals
    assert {"csrf_token", "pending_toasts", "palette_commands", "when"} <= set(callables)
