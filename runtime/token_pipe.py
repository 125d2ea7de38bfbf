"""LLM ∥ token2wav: the LLM of a request runs on its own worker thread and hands speech tokens to the flow and
vocoder stages through a bounded queue, so token generation overlaps the flow/vocoder calls of the chunk before
(ONNX Runtime releases the GIL while a graph runs).

What is computed does not change, only when: each segment's sampler and LLM state are its own and the consumer
reads tokens in order, so the PCM is bitwise the one of the sequential path (tests/test_token_pipe.py).
Backpressure: the queue holds at most `capacity` tokens; a full queue blocks the LLM (a consumer that stops
reading stalls generation instead of filling memory). A failure in the worker is re-raised in the consumer;
`close()` (or dropping the session) stops the worker at its next token.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

_END = object()  # one segment's tokens are done


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class TokenPipe:
    """Runs `segments()` — an iterable of per-segment token iterables — on a worker thread; `segment(i)` iterates
    segment i's tokens in the consumer (segments in order, each to its end)."""

    def __init__(self, segments: Callable[[], Iterable[Iterable[int]]], capacity: int, name: str = "llm"):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._stop = threading.Event()
        self._next_segment = 0
        self._thread = threading.Thread(target=self._run, args=(segments,), name=f"tts-{name}", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, segments) -> None:
        try:
            for tokens in segments():
                for token in tokens:
                    if not self._put(int(token)):
                        return
                if not self._put(_END):
                    return
        except BaseException as e:  # handed to the consumer, which raises it where the tokens were wanted
            self._put(_Failed(e))
            return
        self._put(None)  # no more segments

    def segment(self, index: int) -> Iterator[int]:
        """Segment `index`'s tokens (call for 0, 1, 2, ... in order, each consumed to its end)."""
        if index != self._next_segment:
            raise RuntimeError(f"segment {index} asked for, {self._next_segment} is next")
        self._next_segment += 1
        while True:
            item = self._queue.get()
            if isinstance(item, _Failed):
                raise item.error
            if item is _END or item is None:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __del__(self):  # a session dropped mid-stream must not leave its worker blocked on a full queue
        self._stop.set()
