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


async def test_context_processors_are_called_on_the_loop_not_sent_to_worker_threads(app, client, monkeypatch):
    """Quart runs each plain context processor in a worker thread and back: four hops a page
    for functions that only read g and the config."""
    sent = []
    to_thread = app.sync_to_async
    monkeypatch.setattr(app, "sync_to_async", lambda func: sent.append(func) or to_thread(func))
    response = await client.get("/login")
    assert response.status_code == 200 and 'name="csrf_token"' in (await response.get_data(as_text=True))
    processors = {processor for chain in app.template_context_processors.values() for processor in chain}
    assert len(processors) >= 4 and not processors & set(sent)
