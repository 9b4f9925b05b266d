"""The ASGI application Hypercorn serves: `hypercorn web.asgi:app`."""
import multiprocessing
import signal

from . import create_app
from .live import stream as live_stream

if multiprocessing.parent_process() is not None:
    # A worker under Hypercorn's master process stops gracefully when the master tells it
    # to (on SIGTERM or SIGINT). A SIGTERM sent to the whole process group as well (systemd's
    # default KillMode, `kill -TERM -PGID`) would otherwise kill it at once, mid-request,
    # before after_serving closes the database.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

app = create_app()

# Hypercorn's master tells its workers to stop through an event it hands each of them (its
# `shutdown_event`, kept in the worker's Process object). Live streams never end by
# themselves, and the worker waits for open answers before stopping: they watch that event
# too and end at once, so that a graceful stop takes a moment, not the whole graceful timeout.
if (stopping := getattr(multiprocessing.current_process(), "_kwargs", {}).get("shutdown_event")) is not None:
    live_stream.shut_with(app, stopping)
