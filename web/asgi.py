"""The ASGI application Hypercorn serves: `hypercorn web.asgi:app`."""
import multiprocessing
import signal

from . import create_app

if multiprocessing.parent_process() is not None:
    # A worker under Hypercorn's master process stops gracefully when the master tells it
    # to (on SIGTERM or SIGINT). A SIGTERM sent to the whole process group as well (systemd's
    # default KillMode, `kill -TERM -PGID`) would otherwise kill it at once, mid-request,
    # before after_serving closes the database.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

app = create_app()
