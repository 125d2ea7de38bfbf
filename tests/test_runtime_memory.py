"""Hot-path resources: sessions are created once per process, and memory does not grow with use."""

from __future__ import annotations

import gc
import resource
import tracemalloc

import pytest

TEXT = (
    "A long synthesis, repeated: the process must not grow while it keeps talking, because every "
    "session and buffer is made once and reused."
)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def synthesize(engine, seed):
    from runtime.session import TtsSession

    s = TtsSession(engine, seed=seed, stream=True)
    s.synthesize(TEXT)
    return sum(c.n_samples for c in s.chunks())


@pytest.mark.parametrize("pack_fixture", ["tiny_pack", "tiny_v1_pack"])
def test_no_new_sessions_and_no_memory_growth(pack_fixture, request, monkeypatch):
    import onnxruntime as ort

    from runtime.engine import PackEngine

    pack = request.getfixturevalue(pack_fixture)  # CosyVoice2, and CosyVoice 1's window stream
    engine = PackEngine.get(pack)
    assert PackEngine.get(pack) is engine  # one engine per process per pack/device
    # The same request again and again: ONNX Runtime's arena grows to the largest shapes it has seen and
    # keeps that memory, so requests of growing length would show arena growth, not leaks.
    for _ in range(3):  # warm-up: lazy parts (LLM, tokenizer) load, allocator pools settle
        synthesize(engine, 0)
    created = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: created.append(a) or real(*a, **k))
    gc.collect()
    tracemalloc.start()
    before_py = tracemalloc.get_traced_memory()[0]
    before = rss_mb()
    samples = 0
    for _ in range(20):  # 20 more requests
        samples += synthesize(engine, 0)
    gc.collect()
    growth = rss_mb() - before
    growth_py = (tracemalloc.get_traced_memory()[0] - before_py) / 2**20
    tracemalloc.stop()
    assert created == []  # no ORT session made per request
    assert samples > 20 * engine.sample_rate  # > 20 s of audio went through the hot path
    # numpy/Python allocations (traced): keeping one request's mel + audio (~150 kB) would add ~3 MB over
    # 20 requests (checked by hand with a deliberate leak); native allocations (ORT): RSS within a few MB.
    assert growth_py < 0.5, f"traced Python/numpy memory grew {growth_py:.2f} MB over 20 identical requests"
    assert growth < 8, f"RSS grew {growth:.1f} MB over 20 identical requests"
