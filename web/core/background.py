"""Work a worker does in the background (sending mail, running imports): a task per kind that
looks for due work now and then, and at once when this process commits some."""
import asyncio
import random

from .db import after_commit


class Wakeup:
    """The tasks of this process that wait for one kind of work. A transaction that commits
    such work wakes them (`after(conn)`); tasks in other workers find it at their next look."""

    def __init__(self):
        self.listeners: set[asyncio.Event] = set()

    def wake(self) -> None:
        for listener in self.listeners:
            listener.set()

    def after(self, conn) -> None:
        """Wakes the tasks once `conn`'s write transaction has committed."""
        after_commit(conn, self.wake)


async def repeat(work, wakeup: Wakeup, stopping: asyncio.Event, every_seconds: float, logger, what: str) -> None:
    """Runs `await work()` until `stopping` is set: again after about `every_seconds`, or at
    once when woken. Never cancelled: work under way finishes first (each step has a timeout)."""
    woken = asyncio.Event()
    wakeup.listeners.add(woken)
    try:
        while not stopping.is_set():
            woken.clear()  # what commits from here on is found by this round or wakes the next rest
            try:
                await work()
            except Exception:  # a database or server briefly away must not end the task for good
                logger.exception("%s failed", what)
            waits = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(woken.wait())]
            try:
                await asyncio.wait(waits, timeout=every_seconds * random.uniform(0.5, 1.5),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
    finally:
        wakeup.listeners.discard(woken)


def in_every_worker(app, attribute: str, work) -> None:
    """Runs `await work(stopping)` as a task in each worker, from before_serving on (the task is
    `app.<attribute>`); after_serving sets `stopping` and waits for the task to end: it is never
    cancelled, so work under way (a transaction, an SMTP exchange) finishes first."""
    stopping = asyncio.Event()

    @app.before_serving
    async def start():
        stopping.clear()
        setattr(app, attribute, asyncio.get_running_loop().create_task(work(stopping), name=attribute))

    @app.after_serving
    async def stop():
        stopping.set()
        await getattr(app, attribute)
