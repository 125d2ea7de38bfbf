"""One request's `TtsSession` on a worker thread; its chunks cross to the event loop through a bounded buffer.

A TtsSession is synchronous and not thread-safe, so every call on it happens on the one worker thread: the event
loop sends commands (`synthesize` a whole text, `text` pieces for bi-streaming, `flush`), the worker runs them
exactly as `tts-run` does (after each input, every chunk the session can produce now) and hands each chunk over.
At most `buffer_chunks` chunks wait unsent: a slow client blocks the worker instead of filling memory.

The worker always ends with one terminal item: DONE (every chunk was delivered), an exception (ToolError: bad
input), or Cancelled. `cancel()` (client gone, shutdown) is seen between two chunks; the session and its buffers
are dropped when the thread returns, and only then is `on_exit` called (the admission slot is freed by it).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable

from specs.errors import ToolError

log = logging.getLogger("tts-serve")

_DONE = object()
_POLL_S = 0.1  # how often a blocked worker looks at the cancel flag


class Cancelled(Exception):
    """The stream was cancelled before it completed."""


class SessionWorker:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        executor,
        make_session: Callable,
        on_exit: Callable[[], None],
        buffer_chunks: int = 32,
    ):
        self._loop = loop
        self._make_session = make_session
        self._on_exit = on_exit
        self._commands: queue.Queue = queue.Queue()
        self._out: asyncio.Queue = asyncio.Queue()
        self._credits = threading.Semaphore(buffer_chunks)
        self._cancel = threading.Event()
        self.future = loop.run_in_executor(executor, self._run)

    # ---- event-loop side ------------------------------------------------------------------------------
    def synthesize(self, text: str) -> None:
        self._commands.put(("synthesize", text))

    def push_text(self, text: str) -> None:
        self._commands.put(("text", text))

    def flush(self) -> None:
        self._commands.put(("flush", None))

    def cancel(self) -> None:
        self._cancel.set()
        self._commands.put(None)  # wakes a worker waiting for input

    async def next(self):
        """The next AudioChunk, or None after the last one; raises the session's error or Cancelled."""
        item = await self._out.get()
        self._credits.release()
        if item is _DONE:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    # ---- worker thread --------------------------------------------------------------------------------
    def _emit(self, item) -> None:
        while not self._credits.acquire(timeout=_POLL_S):
            if self._cancel.is_set():
                raise Cancelled()
        try:
            self._loop.call_soon_threadsafe(self._out.put_nowait, item)
        except RuntimeError:  # the event loop is closed (the process is stopping)
            raise Cancelled() from None

    def _run(self) -> None:
        terminal: object = Cancelled()
        try:
            session = self._make_session()
            while not session.done:
                command = self._commands.get()
                if command is None or self._cancel.is_set():
                    raise Cancelled()
                kind, text = command
                if kind == "synthesize":
                    session.synthesize(text)
                elif kind == "text":
                    session.push_text(text)
                else:
                    session.flush()
                for chunk in session.chunks():
                    if self._cancel.is_set():
                        raise Cancelled()
                    self._emit(chunk)
            terminal = _DONE
        except Cancelled:
            pass
        except Exception as e:  # ToolError: bad input; anything else is a bug, logged with its traceback
            if not isinstance(e, ToolError):
                log.exception("session failed")
            terminal = e
        finally:
            session = None  # noqa: F841  (drop the session's buffers before the slot is given back)
            # the terminal item never waits for a credit: a cancelled consumer may never read again
            self._call_soon(self._out.put_nowait, terminal)
            self._call_soon(self._on_exit)

    def _call_soon(self, fn, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the event loop is closed (the process is stopping)
            pass
