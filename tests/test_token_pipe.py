"""LLM ∥ token2wav (runtime/token_pipe.py): the pipelined session gives the sequential session's bytes, also
with several sessions at once; the queue bounds how far the LLM runs ahead; failures reach the consumer; close()
stops a blocked worker."""

from __future__ import annotations

import threading
import time

import pytest

from runtime.token_pipe import TokenPipe

TEXT = (  # long sentences: the splitter makes two segments of it (each its own LLM run)
    "This first sentence keeps going with many ordinary words, one after another, so that it alone is long enough "
    "to stand as a segment of its own without being merged into the next one, which is what the splitter does "
    "with short sentences, and it goes on a little further still. The second sentence also carries a great many "
    "plain words, placed one after the other in a long and winding line, so that the splitter cuts it off from the "
    "others and gives it its own run of the model, just like the sentence before it did, and then some more. And "
    "the third sentence, like the two before it, says enough words in a row to be a segment all by itself."
)


def synth(engine, pipeline: bool, stream: bool = True, seed: int = 1) -> tuple[bytes, list]:
    from runtime.session import TtsSession

    s = TtsSession(engine, seed=seed, stream=stream, pipeline=pipeline)
    s.synthesize(TEXT)
    chunks = list(s.chunks())
    return b"".join(c.pcm for c in chunks), [(c.segment, c.token_offset, c.n_samples) for c in chunks]


@pytest.fixture(scope="module")
def engine(tiny_pack):
    from runtime.engine import PackEngine

    return PackEngine.get(tiny_pack)


@pytest.mark.parametrize("stream", [True, False])
def test_pipelined_equals_sequential(engine, stream):
    seq_pcm, seq_meta = synth(engine, pipeline=False, stream=stream)
    pipe_pcm, pipe_meta = synth(engine, pipeline=True, stream=stream)
    assert len({m[0] for m in seq_meta}) >= 2  # several segments, each its own LLM run
    assert pipe_pcm == seq_pcm and pipe_meta == seq_meta


def test_four_concurrent_pipelined_sessions_equal_sequential(engine):
    expected = {seed: synth(engine, pipeline=False, seed=seed)[0] for seed in range(4)}
    got: dict[int, bytes] = {}
    threads = [
        threading.Thread(target=lambda k=k: got.__setitem__(k, synth(engine, True, seed=k)[0])) for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert got == expected


def test_v3_pipelined_equals_sequential(tiny_v3_pack):
    from runtime.engine import PackEngine

    e = PackEngine.get(tiny_v3_pack)
    assert synth(e, pipeline=True) == synth(e, pipeline=False)


def test_queue_bounds_how_far_the_llm_runs_ahead():
    produced: list[int] = []

    def tokens():
        for i in range(50):
            produced.append(i)
            yield i

    pipe = TokenPipe(lambda: [tokens()], capacity=4)
    ahead = []
    for consumed, _tok in enumerate(pipe.segment(0), 1):
        time.sleep(0.005)  # a slow consumer
        ahead.append(len(produced) - consumed)
    pipe.close()
    assert len(produced) == 50 and max(ahead) <= 4 + 1  # the queue plus the one token being put


def test_worker_failure_is_raised_in_the_consumer():
    def tokens():
        yield 1
        raise RuntimeError("LLM graph failed")

    pipe = TokenPipe(lambda: [tokens()], capacity=2)
    with pytest.raises(RuntimeError, match="LLM graph failed"):
        list(pipe.segment(0))


def test_close_stops_a_blocked_worker():
    pipe = TokenPipe(lambda: [iter(range(10**9))], capacity=2)
    time.sleep(0.1)  # the worker fills the queue and blocks
    pipe.close()
    assert not pipe._thread.is_alive()


def test_segments_are_read_in_order():
    pipe = TokenPipe(lambda: [iter([1, 2]), iter([3])], capacity=2)
    with pytest.raises(RuntimeError, match="segment 1 asked for, 0 is next"):
        next(pipe.segment(1))
    assert list(pipe.segment(0)) == [1, 2]
    pipe.close()
