"""Audio correctness of the runtime on the tiny pack: determinism, fixed chunks, continuity, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from specs.errors import ToolError

TEXT = (
    "Hello there, tiny voice. This sentence is here so that the random model keeps talking long "
    "enough to stream several chunks of audio."
)  # ~30 text tokens: min_len 60 speech tokens


def run_session(engine, text=TEXT, seed=0, stream=True, mode="synthesize", **kw):
    from runtime.session import TtsSession

    s = TtsSession(engine, seed=seed, stream=stream, **kw)
    if mode == "synthesize":
        s.synthesize(text)
    else:
        for word in text.split(" "):
            s.push_text(word + " ")
            pre = list(s.chunks())
            assert all(c.n_samples == s.chunk_samples for c in pre)
        s.flush()
    chunks = list(s.chunks())
    assert s.done and chunks[-1].final and not any(c.final for c in chunks[:-1])
    return s, chunks


def pcm_of(chunks) -> np.ndarray:
    return np.frombuffer(b"".join(c.pcm for c in chunks), "<i2")


@pytest.fixture(scope="module")
def engine(tiny_pack):
    from runtime.engine import PackEngine

    return PackEngine.get(tiny_pack)


@pytest.mark.parametrize("stream", [True, False])
def test_same_seed_same_bytes_and_chunks(engine, stream):
    _, a = run_session(engine, stream=stream)
    _, b = run_session(engine, stream=stream)
    assert [c.meta() for c in a] == [c.meta() for c in b]
    assert pcm_of(a).tobytes() == pcm_of(b).tobytes()
    _, other = run_session(engine, seed=1, stream=stream)
    assert pcm_of(other).tobytes() != pcm_of(a).tobytes()


def test_fixed_chunk_size_and_offsets(engine):
    s, chunks = run_session(engine)
    n = s.chunk_samples
    assert n == 960  # 40 ms at 24 kHz, from the pack's chunk policy
    assert all(c.n_samples == n for c in chunks[:-1]) and 0 < chunks[-1].n_samples <= n
    assert [c.sample_offset for c in chunks] == [i * n for i in range(len(chunks))]
    assert all(len(c.pcm) == 2 * c.n_samples for c in chunks)
    import hashlib

    assert all(hashlib.sha256(c.pcm).hexdigest() == c.sha256 for c in chunks)
    offsets = [c.token_offset for c in chunks]
    assert offsets == sorted(offsets) and offsets[-1] > 0  # later chunks come from later flow calls


def test_output_chunk_size_does_not_change_the_audio(engine):
    """Re-chunking is exact: 40 ms or 10 ms output chunks carry the same samples."""
    _, a = run_session(engine)
    from runtime.session import TtsSession

    s = TtsSession(engine, seed=0, stream=True)
    s.chunk_samples = 240
    s.synthesize(TEXT)
    b = list(s.chunks())
    assert pcm_of(a).tobytes() == pcm_of(b).tobytes()
    assert len(b) >= 4 * (len(a) - 1)


def test_bistream_text_input_is_deterministic_and_incremental(engine):
    s1, a = run_session(engine, mode="bistream")
    _, b = run_session(engine, mode="bistream")
    assert pcm_of(a).tobytes() == pcm_of(b).tobytes()
    assert s1.flow_calls >= 2  # audio came out in several streamed pieces


def boundary_jumps(pcm: np.ndarray, starts: list[int]) -> tuple[np.ndarray, float]:
    """|x[b] - x[b-1]| at each boundary b, and the 99.9th percentile of the signal's own |x[n] - x[n-1]|."""
    x = pcm.astype(np.int64)
    diffs = np.abs(np.diff(x))
    jumps = np.array([abs(int(x[b]) - int(x[b - 1])) for b in starts if 0 < b < len(x)])
    return jumps, float(np.percentile(diffs, 99.9))


def vocoder_boundaries(engine, n_tokens=300) -> tuple[np.ndarray, list[int]]:
    """Output samples and the sample positions where one vocoder call's audio follows another's, for one
    streamed utterance of `n_tokens` speech tokens (hops 25, 50, 100, 100: five calls)."""
    from runtime.session import TtsSession

    s = TtsSession(engine, seed=0, stream=True)
    starts = []
    orig = s._append

    def record(*piece):
        starts.append(s._produced)
        orig(*piece)

    s._append = record
    s.push_tokens(np.random.default_rng(7).integers(0, 6561, n_tokens))
    pcm = pcm_of(list(s.chunks()))
    return pcm, starts[1:]


def test_no_clicks_at_chunk_boundaries(engine):
    pcm, starts = vocoder_boundaries(engine)
    assert len(starts) >= 3
    jumps, p999 = boundary_jumps(pcm, starts)
    # A boundary is a click if its jump is an outlier against the signal's own sample-to-sample changes.
    assert jumps.max() <= p999, (jumps, p999)


def test_click_detector_catches_a_missing_crossfade(engine, monkeypatch):
    """Negative control: without the cross-fade (and with the tail misaligned) the same check must fail."""
    from runtime.vocoder import VocoderStage

    monkeypatch.setattr(VocoderStage, "_fade_in", lambda self, audio, tail: -audio)
    pcm, starts = vocoder_boundaries(engine)
    jumps, p999 = boundary_jumps(pcm, starts)
    assert jumps.max() > p999


def test_tokens_only_path_needs_no_llm(engine):
    from runtime.session import TtsSession

    s = TtsSession(engine, seed=0, stream=True)
    s.push_tokens(np.arange(80) * 37 % 6561)
    chunks = list(s.chunks())
    assert sum(c.n_samples for c in chunks) == 80 * 2 * 480  # 2 mel frames per token, 480 samples per frame


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.synthesize("   "), "text | has nothing to say"),
        (lambda s: s.synthesize("x" * 20_001), "text | is 20001 characters"),
        (lambda s: s.synthesize("?!..."), "text | has nothing to say"),
        (lambda s: s.push_tokens([1, 2, 7000]), "out of range, e.g. 7000"),
        (lambda s: s.push_tokens([]), "speech tokens | are empty"),
    ],
)
def test_bad_session_input(engine, call, message):
    from runtime.session import TtsSession

    s = TtsSession(engine, max_chars=20_000)
    with pytest.raises(ToolError, match=message.replace("|", r"\|")):
        call(s)
        list(s.chunks())
