"""Reads worth reusing for a few seconds: the users table's totals. (Never a session: those are
read at every request, so that revoking one takes effect at once on every worker.)

An answer is reused only while this process has written nothing to the database since it was
read (`Database.writes`), and for at most `seconds`: this worker sees its own writes at once,
another worker's within `seconds`. See docs/PERFORMANCE.md for what each saves.
"""
import time

from cachetools import TTLCache

from .db import Database


class Recent:
    def __init__(self, seconds: float, size: int, clock=time.monotonic):
        self._answers = TTLCache(maxsize=size, ttl=seconds, timer=clock)

    async def get(self, key, read):
        """The answer for `key`: the one kept, or what `await read()` gives now (None is not kept)."""
        kept = self._answers.get(key)
        if kept is not None and kept[0] == Database.writes:
            return kept[1]
        writes = Database.writes  # before reading: a write that ends meanwhile makes it stale
        answer = await read()
        if answer is not None:
            self._answers[key] = (writes, answer)
        return answer
