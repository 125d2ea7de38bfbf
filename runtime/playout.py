"""Paced playout: a session's chunks released at the audio clock, through a fixed ring of preallocated blocks.

    report = play(session, write=sink.write, preroll_ms=200)      # tts-run --realtime

The session runs on a producer thread and copies each chunk into the next free block of a `PcmRing` (capacity
fixed when the ring is made, from the chunk policy; a full ring blocks the producer: backpressure, never growth).
The caller's thread waits for the pre-roll (`preroll_ms` of audio buffered, or the whole stream if shorter), then
releases chunk k at `t0 + k x chunk duration`: it sleeps until shortly before the deadline and spins the rest
(a plain sleep overshoots by up to a scheduler tick). A chunk that is not there at its deadline is an underrun:
playout waits for it and the clock shifts by the wait, as a real audio device's would.

The report gives, per stream: time to first audio (first release), underruns (count, total and max ms), the
jitter of release times against the clock (p50 / p99 / max ms, underrun releases excluded: they are late by
design), the chunks and the ring's capacity. Bytes and chunk boundaries are the session's own: pacing changes
when chunks are released, never what they hold.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from specs.chunk_policy import ChunkPolicy

SPIN_S = 0.002  # the last 2 ms before a deadline are spun, not slept


class PcmRing:
    """A fixed ring of `capacity` preallocated int16 blocks of `block_samples` each, one producer, one consumer.
    `put` copies a chunk's PCM into the next free block (blocks while the ring is full); `get` returns a view of
    the oldest filled block and its metadata, valid until the next `get`."""

    def __init__(self, capacity: int, block_samples: int):
        self.capacity, self.block_samples = int(capacity), int(block_samples)
        self.blocks = np.zeros((self.capacity, self.block_samples), np.int16)
        self.lengths = np.zeros(self.capacity, np.int64)
        self.meta: list[object] = [None] * self.capacity
        self.head = self.tail = self.count = 0  # head: next to read, tail: next to write
        self.high_water = 0
        self.closed = False
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._reading: int | None = None  # the block handed out by the last get, freed by the next

    def put(self, pcm: bytes, meta) -> bool:
        """False if the ring was closed (the consumer gave up): the producer should stop."""
        n = len(pcm) // 2
        if n > self.block_samples:
            raise ValueError(f"a chunk of {n} samples does not fit blocks of {self.block_samples}")
        with self._cond:
            while self.count == self.capacity and not self.closed:
                self._cond.wait()
            if self.closed:
                return False
            i = self.tail
            self.blocks[i, :n] = np.frombuffer(pcm, "<i2")
            self.lengths[i], self.meta[i] = n, meta
            self.tail = (i + 1) % self.capacity
            self.count += 1
            self.high_water = max(self.high_water, self.count)
            self._cond.notify_all()
        return True

    def finish(self, error: BaseException | None = None) -> None:
        with self._cond:
            self.closed, self.error = True, error
            self._cond.notify_all()

    def _free_reading(self) -> None:
        if self._reading is not None:
            self.head = (self._reading + 1) % self.capacity
            self.count -= 1
            self._reading = None
            self._cond.notify_all()

    def get(self, timeout: float | None = None):
        """(pcm view, meta) of the oldest chunk; None at the end of the stream; TimeoutError if none came."""
        with self._cond:
            self._free_reading()
            deadline = None if timeout is None else time.perf_counter() + timeout
            while self.count == 0:
                if self.closed:
                    if self.error is not None:
                        raise self.error
                    return None
                left = None if deadline is None else deadline - time.perf_counter()
                if left is not None and left <= 0:
                    raise TimeoutError
                self._cond.wait(left)
            i = self._reading = self.head
            return self.blocks[i, : self.lengths[i]], self.meta[i]

    def wait_filled(self, blocks: int) -> None:
        """Until `blocks` chunks are buffered or the stream is complete (the pre-roll)."""
        with self._cond:
            while not self.closed and self.count < blocks:
                self._cond.wait()

    def abort(self) -> None:
        """The consumer stops: a blocked producer returns from put with False."""
        self.finish()


def ring_capacity(policy: ChunkPolicy, preroll_chunks: int) -> int:
    """Blocks for two of the largest audio pieces one flow call emits (the max hop's mel frames), plus the
    pre-roll: the producer can finish a piece while the previous one plays."""
    piece = policy.mel(policy.token_max_hop_len + policy.carried_tokens) * policy.samples_per_mel_frame
    return 2 * -(-piece // policy.output_chunk_samples) + preroll_chunks


@dataclass
class PlayoutReport:
    chunks: int = 0
    samples: int = 0
    preroll_ms: float = 0.0
    ring_capacity: int = 0
    ring_high_water: int = 0
    ttfa_s: float | None = None  # first chunk released, from play()'s start
    underruns: int = 0
    underrun_total_ms: float = 0.0
    underrun_max_ms: float = 0.0
    jitter_ms: dict = field(default_factory=dict)  # p50 / p99 / max of |release - deadline|, on-time releases

    def line(self) -> str:
        j, nan = self.jitter_ms, float("nan")
        first = self.ttfa_s * 1000 if self.ttfa_s is not None else nan
        return (
            f"paced playout: {self.chunks} chunks, pre-roll {self.preroll_ms:.0f} ms, ring {self.ring_capacity} "
            f"blocks (high water {self.ring_high_water}) | first audio {first:.0f} ms | underruns {self.underruns} "
            f"(total {self.underrun_total_ms:.0f} ms, max {self.underrun_max_ms:.0f} ms) | jitter p50 "
            f"{j.get('p50', nan):.3f} / p99 {j.get('p99', nan):.3f} / max {j.get('max', nan):.3f} ms"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _sleep_until(t: float) -> float:
    while True:
        now = time.perf_counter()
        left = t - now
        if left <= 0:
            return now
        if left > SPIN_S:
            time.sleep(left - SPIN_S)


def play(
    session,
    write: Callable[[np.ndarray, object], None],
    preroll_ms: float = 200.0,
    capacity: int | None = None,
) -> PlayoutReport:
    """Run `session` (after synthesize / push_tokens / flush) on a producer thread and release its chunks to
    `write(pcm int16 view, chunk)` at the audio clock; returns the report. The session's own chunk sizes are the
    clock's ticks (the last chunk may be shorter)."""
    policy: ChunkPolicy = session.engine.chunk_policy
    rate, block = policy.sample_rate, policy.output_chunk_samples
    preroll_samples = int(round(preroll_ms / 1000 * rate))
    preroll_chunks = -(-preroll_samples // block)
    ring = PcmRing(capacity or ring_capacity(policy, preroll_chunks), block)

    def produce():
        try:
            for chunk in session.chunks():
                if not ring.put(chunk.pcm, chunk):
                    return
            ring.finish()
        except BaseException as e:  # handed to the consumer, raised there
            ring.finish(e)

    report = PlayoutReport(preroll_ms=preroll_ms, ring_capacity=ring.capacity)
    t_start = time.perf_counter()
    producer = threading.Thread(target=produce, name="tts-producer", daemon=True)
    producer.start()
    try:
        ring.wait_filled(preroll_chunks)
        jitter: list[float] = []
        clock = None
        played = 0  # samples released so far: the clock's position
        while True:
            deadline = None if clock is None else clock + played / rate
            if deadline is not None:
                _sleep_until(deadline)
            waited_from = time.perf_counter()
            try:
                item = ring.get(timeout=0.0)
            except TimeoutError:
                item = ring.get()  # underrun: wait for it
                if item is None:
                    break
                late = (time.perf_counter() - waited_from) * 1000
                report.underruns += 1
                report.underrun_total_ms += late
                report.underrun_max_ms = max(report.underrun_max_ms, late)
                clock = None if clock is None else clock + late / 1000  # the clock shifts by the wait
                deadline = None
            if item is None:
                break
            now = time.perf_counter()
            if clock is None:
                clock = now - played / rate
                report.ttfa_s = report.ttfa_s if report.ttfa_s is not None else now - t_start
            elif deadline is not None:
                jitter.append(abs(now - deadline) * 1000)
            pcm, chunk = item
            write(pcm, chunk)
            played += len(pcm)
            report.chunks += 1
            if getattr(chunk, "final", False):
                break
        report.samples = played
        report.ring_high_water = ring.high_water
        if jitter:
            a = np.asarray(jitter)
            report.jitter_ms = {
                "p50": float(np.percentile(a, 50)),
                "p99": float(np.percentile(a, 99)),
                "max": float(a.max()),
            }
        return report
    finally:
        ring.abort()
        producer.join(timeout=5)
