"""runtime/flow_stage.py: token -> mel over the exported graphs equals upstream's flow, call by call, both
for a stream (upstream CosyVoice2Model.tts's own chunk loop) and offline."""

import numpy as np
import pytest

from specs.chunk_policy import ChunkPolicy, FlowCall, TokenHopSchedule
from specs.compare import compare
from specs.pack import Pack
from tests.support.trt_fakes import CHUNK_POLICY

POLICY = ChunkPolicy.from_manifest({"sample_rate": 24000, "chunk_policy": CHUNK_POLICY})


def test_ode_schedule_is_upstreams_float32_schedule():
    from runtime.flow_stage import ode_schedule

    steps = ode_schedule(10, "cosine")
    # Upstream solve_euler's (t, dt) per step in float32 (../shared/notes/upstream-inference.md 4.5).
    t_in = [
        0,
        0.0123116374,
        0.04894346,
        0.108993471,
        0.190982997,
        0.292893231,
        0.412214816,
        0.546009481,
        0.690983057,
        0.843565524,
    ]
    assert all(isinstance(t, np.float32) and isinstance(dt, np.float32) for t, dt in steps)
    np.testing.assert_allclose([t for t, _ in steps], t_in, rtol=1e-8, atol=1e-9)
    assert float(steps[-1][0] + steps[-1][1]) == 1.0


@pytest.mark.oracle
def test_ode_schedule_is_bit_exact_with_torch():
    from exporters.graphs.flow_common import ode_time
    from runtime.flow_stage import ode_schedule

    assert [float(t) for t, _ in ode_schedule(10, "cosine")] == [ode_time(k) for k in range(10)]


def test_hop_schedule_with_prompt_pad():
    # 17 prompt tokens: pad 8, hops 33, 50, 100, then the final call on everything.
    plan = TokenHopSchedule(POLICY, 17).plan(200)
    assert plan == [
        FlowCall(36, 0, True, False),
        FlowCall(86, 33, True, False),
        FlowCall(186, 83, True, False),
        FlowCall(200, 183, False, True),
    ]
    assert TokenHopSchedule(POLICY, 0).plan(27) == [FlowCall(27, 0, False, True)]  # 27 < 25 + 3
    assert TokenHopSchedule(POLICY, 50).plan(28)[0] == FlowCall(28, 0, True, False)  # no pad on a whole chunk


def _inputs(seed, n_prompt, n_gen):
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, 6561, (1, n_prompt))
    gen = rng.integers(0, 6561, (1, n_gen))
    feat = (-5.0 + 2.0 * rng.standard_normal((1, 2 * n_prompt, 80))).astype(np.float32)
    emb = rng.standard_normal((1, 192)).astype(np.float32)
    return gen, prompt, feat, emb


@pytest.fixture(scope="module")
def stage(tiny_pack):
    from runtime.flow_stage import FlowStage

    return FlowStage(Pack.open(tiny_pack))


@pytest.mark.oracle
@pytest.mark.parametrize("n_prompt,n_gen", [(17, 200), (0, 140)])
def test_streaming_mel_matches_upstream_tts_loop(tiny_model, tiny_pack, stage, n_prompt, n_gen):
    from exporters.oracles.flow import TOKEN2MEL_TOLERANCE, upstream_token2mel

    gen, prompt, feat, emb = _inputs(n_prompt + n_gen, n_prompt, n_gen)
    ref = upstream_token2mel(tiny_model, gen, prompt, feat, emb, stream=True)
    plan = TokenHopSchedule(Pack.open(tiny_pack).chunk_policy, n_prompt).plan(n_gen)
    # Same calls as upstream's own loop: hops 25+pad, 50, 100, ..., then finalize with full attention.
    assert [(c.end, c.token_offset, c.streaming, c.finalize) for c in ref] == [
        (c.end, c.token_offset, c.streaming, c.finalize) for c in plan
    ]
    assert len(plan) >= 3
    for call, want in zip(plan, ref):
        mel = stage.token2mel(gen[:, : call.end], prompt, feat, emb, call.token_offset, call.streaming, call.finalize)
        c = compare(mel, want.mel, TOKEN2MEL_TOLERANCE, f"token2mel/stream/{call.end}")
        assert c.passed, c.line()
        emitted = (call.end - call.token_offset) if call.finalize else (call.end - 3 - call.token_offset)
        assert mel.shape == (1, 80, 2 * emitted)
    assert sum(r.mel.shape[2] for r in ref) == 2 * n_gen  # every generated token -> 2 frames, once


@pytest.mark.oracle
def test_offline_mel_matches_upstream(tiny_model, stage):
    from exporters.oracles.flow import TOKEN2MEL_TOLERANCE, upstream_token2mel

    gen, prompt, feat, emb = _inputs(5, 17, 91)
    (want,) = upstream_token2mel(tiny_model, gen, prompt, feat, emb, stream=False)
    mel = stage.token2mel(gen, prompt, feat, emb)
    assert mel.shape == (1, 80, 2 * 91)
    c = compare(mel, want.mel, TOKEN2MEL_TOLERANCE, "token2mel/offline")
    assert c.passed, c.line()


def test_non_final_call_needs_more_than_the_lookahead(stage):
    from specs.errors import ToolError

    with pytest.raises(ToolError, match="lookahead"):
        stage.token2mel(
            np.zeros((1, 3), np.int64),
            np.zeros((1, 0), np.int64),
            np.zeros((1, 0, 80), np.float32),
            np.ones((1, 192), np.float32),
            streaming=True,
            finalize=False,
        )
