"""Prometheus metrics of one server (its own registry, so several apps in one process do not collide), and the
per-stream clock that feeds them.

Definitions (also the benchmark's, ci/bench_serving.py, measured there on the client side):
- TTFA: request arrival (queue wait included) to the first audio chunk handed to the connection.
- RTF: admission to the last chunk, divided by the audio's duration.
- underrun: a listener starting playback with the first chunk runs dry when chunk k is handed over after the
  audio before it has finished playing, i.e. at t_k > t_first + samples_before_k / sample_rate; the stream's
  worst underrun is the largest such lateness (0 if none).
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "StreamClock"]


class Metrics:
    def __init__(self, admission):
        r = self.registry = CollectorRegistry()
        per_endpoint = lambda kind, name, doc, **kw: kind(name, doc, ["endpoint"], registry=r, **kw)
        self.ttfa = per_endpoint(
            Histogram, "tts_ttfa_seconds", "Request arrival to first audio chunk sent", buckets=LATENCY_BUCKETS
        )
        self.queue_wait = per_endpoint(
            Histogram, "tts_queue_wait_seconds", "Time a request waited for a slot", buckets=LATENCY_BUCKETS
        )
        self.rtf = per_endpoint(
            Histogram, "tts_rtf", "Per stream: admission to last chunk / audio seconds", buckets=RTF_BUCKETS
        )
        self.worst_underrun = per_endpoint(
            Histogram,
            "tts_stream_worst_underrun_seconds",
            "Per stream: the largest lateness of a chunk against real-time playback from the first chunk (0: none)",
            buckets=(0.0, *LATENCY_BUCKETS),
        )
        self.underruns = per_endpoint(
            Counter, "tts_underruns", "Chunks sent after the audio before them would have finished playing"
        )
        self.rejected = per_endpoint(Counter, "tts_rejected", "Requests refused with 429 (queue full)")
        self.audio_seconds = per_endpoint(Counter, "tts_audio_seconds", "Audio sent, seconds")
        self.streams = Counter(
            "tts_streams",
            "Streams that ended, by outcome (completed, cancelled, error)",
            ["endpoint", "outcome"],
            registry=r,
        )
        active = Gauge("tts_active_streams", "Sessions running now (worker threads busy)", registry=r)
        active.set_function(lambda: admission.active)
        queued = Gauge("tts_queue_depth", "Requests waiting for a slot", registry=r)
        queued.set_function(lambda: admission.waiting)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class StreamClock:
    """Times one stream's chunks as they are handed to the connection; `finish` records it in the metrics."""

    def __init__(self, metrics: Metrics, endpoint: str, sample_rate: int, t_request: float):
        self.metrics, self.endpoint, self.sample_rate = metrics, endpoint, sample_rate
        self.t_request = t_request
        self.t_admitted: float | None = None
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.samples = 0
        self.chunks = 0
        self.worst_underrun = 0.0
        self.late_chunks = 0

    def admitted(self) -> None:
        self.t_admitted = time.perf_counter()
        self.metrics.queue_wait.labels(self.endpoint).observe(self.t_admitted - self.t_request)

    def sent(self, n_samples: int) -> None:
        now = time.perf_counter()
        if self.t_first is None:
            if n_samples:
                self.t_first = now
                self.metrics.ttfa.labels(self.endpoint).observe(now - self.t_request)
        else:
            late = now - (self.t_first + self.samples / self.sample_rate)
            if late > 0:
                self.late_chunks += 1
                self.worst_underrun = max(self.worst_underrun, late)
        self.samples += n_samples
        self.chunks += 1
        self.t_last = now

    def finish(self, outcome: str) -> None:
        m, e = self.metrics, self.endpoint
        m.streams.labels(e, outcome).inc()
        m.audio_seconds.labels(e).inc(self.samples / self.sample_rate)
        if outcome != "completed" or not self.samples or self.t_admitted is None or self.t_last is None:
            return
        m.rtf.labels(e).observe((self.t_last - self.t_admitted) / (self.samples / self.sample_rate))
        m.worst_underrun.labels(e).observe(self.worst_underrun)
        m.underruns.labels(e).inc(self.late_chunks)
