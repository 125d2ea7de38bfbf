"""Admission: at most `limit` sessions run at once; up to `queue` more requests wait (first come, first served);
beyond that a request is refused at once (HTTP 429 with Retry-After). Lives on the event loop (asyncio only)."""

from __future__ import annotations

import asyncio


class Full(Exception):
    """Every slot is taken and the queue is full."""


class Draining(Exception):
    """The server is shutting down: no new streams."""


class Admission:
    def __init__(self, limit: int, queue: int):
        if limit < 1 or queue < 0:
            raise ValueError(f"limit {limit} must be >= 1 and queue {queue} >= 0")
        self.limit = limit
        self.queue = queue
        self.active = 0
        self.waiting = 0
        self.draining = False
        self._slots = asyncio.Semaphore(limit)

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue if need be; raises Full or Draining. Cancelling the wait (the client
        left) gives up the queue place."""
        if self.draining:
            raise Draining()
        if self._slots.locked() and self.waiting >= self.queue:
            raise Full()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        if self.draining:  # shutdown began while this request waited
            self._slots.release()
            raise Draining()
        self.active += 1

    def release(self) -> None:
        """Called when the session's worker thread has ended (on the event loop)."""
        self.active -= 1
        self._slots.release()
