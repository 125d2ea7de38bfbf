"""runtime/playout.py: paced playout through a fixed ring of preallocated blocks. The ring blocks a producer whose
consumer stops reading (backpressure, bounded memory), chunks are released at the audio clock with the session's
own bytes, a producer that falls behind is counted as underruns, and a producer's error reaches the caller."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from runtime.playout import PcmRing, play, ring_capacity
from specs.chunk_policy import ChunkPolicy, Crossfade
from specs.errors import ToolError

POLICY = ChunkPolicy(
    token_hop_len=25,
    token_max_hop_len=100,
    stream_scale_factor=2,
    pre_lookahead_len=3,
    token_mel_ratio=2,
    mel_cache_len=8,
    source_cache_len=3840,
    samples_per_mel_frame=480,
    output_chunk_samples=960,  # 40 ms at 24 kHz
    crossfade=Crossfade("hamming", 7680),
)
CHUNK_S = 0.04


def chunk(i: int, final: bool = False, n: int = 960):
    pcm = (np.arange(n, dtype=np.int64) + 1000 * i).astype("<i2").tobytes()
    return SimpleNamespace(pcm=pcm, index=i, final=final)


def fake_session(pieces):
    """`pieces`: chunks, or floats = seconds the producer stalls there."""

    def chunks():
        for p in pieces:
            if isinstance(p, float):
                time.sleep(p)
            elif isinstance(p, Exception):
                raise p
            else:
                yield p

    return SimpleNamespace(engine=SimpleNamespace(chunk_policy=POLICY), chunks=chunks)


def collect():
    out = []
    return out, lambda pcm, c: out.append(bytes(pcm.tobytes()))


def test_ring_capacity_comes_from_the_chunk_policy():
    # the max hop's piece: (100 + 3) tokens x 2 frames x 480 samples = 98,880 samples = 103 chunks; twice, + pre-roll
    assert ring_capacity(POLICY, 5) == 2 * 103 + 5


def test_a_full_ring_blocks_its_producer_and_never_grows():
    ring = PcmRing(3, 960)
    blocks = ring.blocks
    done = []

    def produce():
        for i in range(10):
            if not ring.put(chunk(i).pcm, i):
                done.append(("stopped at", i))
                return
        done.append("all")

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(0.3)
    assert t.is_alive() and ring.count == 3 and ring.high_water == 3  # blocked on the 4th chunk
    pcm, meta = ring.get()
    assert meta == 0 and np.array_equal(pcm, np.frombuffer(chunk(0).pcm, "<i2"))
    ring.abort()  # the consumer gives up: the producer is released, not left waiting
    t.join(timeout=2)
    assert not t.is_alive() and done and done[0][0] == "stopped at"
    assert ring.blocks is blocks and ring.blocks.shape == (3, 960)  # the same preallocated blocks throughout


def test_chunks_are_released_at_the_audio_clock_with_the_sessions_bytes():
    pieces = [chunk(i) for i in range(24)] + [chunk(24, final=True, n=100)]
    out, write = collect()
    t0 = time.perf_counter()
    report = play(fake_session(pieces), write, preroll_ms=0)
    wall = time.perf_counter() - t0
    assert out == [c.pcm for c in pieces]
    assert report.chunks == 25 and report.samples == 24 * 960 + 100 and report.underruns == 0
    assert wall >= 24 * CHUNK_S * 0.98  # paced: chunk k is released at k x 40 ms, not as fast as produced
    assert set(report.jitter_ms) == {"p50", "p99", "max"} and report.ttfa_s is not None
    assert report.ring_high_water <= report.ring_capacity


def test_a_producer_that_falls_behind_is_counted_as_underruns():
    pieces = [chunk(i) for i in range(3)] + [0.3] + [chunk(3 + i, final=i == 2) for i in range(3)]
    out, write = collect()
    report = play(fake_session(pieces), write, preroll_ms=0)
    assert out == [c.pcm for c in pieces if not isinstance(c, float)]
    # the 3 chunks buffered play for 120 ms; the stall lasts 300 ms: about 180 ms without audio
    assert report.underruns == 1 and 100 <= report.underrun_max_ms <= 400
    assert report.underrun_total_ms == report.underrun_max_ms


def test_preroll_waits_for_buffered_audio():
    pieces = [chunk(0), 0.25] + [chunk(i) for i in range(1, 8)] + [chunk(8, final=True)]
    out, write = collect()
    report = play(fake_session(pieces), write, preroll_ms=200)  # 5 chunks before the first release
    assert report.ttfa_s >= 0.25 and report.underruns == 0 and len(out) == 9


def test_a_producer_error_reaches_the_caller():
    err = ToolError("text", "has nothing to say")
    with pytest.raises(ToolError, match="nothing to say"):
        play(fake_session([chunk(0), err]), lambda pcm, c: None, preroll_ms=0)


@pytest.mark.oracle
def test_paced_playout_of_a_real_session_gives_the_same_bytes(tiny_pack):
    from runtime.engine import PackEngine
    from runtime.session import TtsSession

    engine = PackEngine.get(tiny_pack)

    def session():
        s = TtsSession(engine, seed=5, stream=True)
        s.synthesize("Paced playout test.")
        return s

    expected = [c.pcm for c in session().chunks()]
    out, write = collect()
    report = play(session(), write, preroll_ms=200)
    assert out == expected and report.chunks == len(expected)
    assert report.ring_capacity == ring_capacity(engine.chunk_policy, 5)


def test_chunk_policy_overrides_change_only_the_tunable_fields():
    tuned = POLICY.with_overrides({"token_hop_len": 50, "output_chunk_samples": 480})
    assert (tuned.token_hop_len, tuned.output_chunk_samples, tuned.mel_cache_len) == (50, 480, POLICY.mel_cache_len)
    assert tuned.hops(0, 3) == [50, 100, 100]
    with pytest.raises(ToolError, match="sets mel_cache_len, which belong to the pack's graphs"):
        POLICY.with_overrides({"mel_cache_len": 4})
    with pytest.raises(ToolError, match="token_hop_len must be integers"):
        POLICY.with_overrides({"token_hop_len": "50"})
    with pytest.raises(ToolError, match="need 1 <= token_hop_len <= token_max_hop_len"):
        POLICY.with_overrides({"token_hop_len": 200})
    with pytest.raises(ToolError, match="is a list"):
        POLICY.with_overrides([1, 2])
