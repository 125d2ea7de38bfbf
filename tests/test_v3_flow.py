"""CosyVoice3 flow graphs (exporters/graphs/flow_v3.py): `flow.prep` and the DiT `flow.decoder.estimator`,
exported through the real pack pipeline from the tiny random-init v3 bundle, reproduce upstream's
`CausalMaskedDiffWithDiT` on every case and at other lengths; their mode inputs (`finalize`, `streaming`)
act as upstream's flags do; and prep + 10 CFG Euler steps over the estimator on ONNX Runtime reproduce
upstream's `flow.inference` mel for a streaming chunk and a final call."""

import re
from types import SimpleNamespace

import numpy as np
import pytest

from backends.ort import OrtRunner
from specs.compare import check_vectors
from specs.pack import Pack

pytestmark = pytest.mark.oracle

PREP, EST = "flow.prep", "flow.decoder.estimator"


@pytest.fixture(scope="module")
def v3_pack(tiny_v3_bundle, tmp_path_factory):
    import exporters.graphs
    from exporters.graphs.flow_v3 import EstimatorV3Exporter, FlowPrepV3Exporter
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack

    out = tmp_path_factory.mktemp("v3-flow") / "pack"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(exporters.graphs.REGISTRY_V3, PREP, FlowPrepV3Exporter)
        mp.setitem(exporters.graphs.REGISTRY_V3, EST, EstimatorV3Exporter)
        export_pack(tiny_v3_bundle, out, [PREP, EST], ExportOptions(seed=0, log=lambda m: None), log=lambda m: None)
    return Pack.open(out)


@pytest.fixture(scope="module")
def runners(v3_pack):
    out = {}
    for name in (PREP, EST):
        entry = v3_pack.graph(name)
        out[name] = (OrtRunner(entry.onnx_path, entry.spec()), entry.vectors())
    return out


def test_export_passes_every_case(runners):
    assert set(runners[PREP][1]) == {"offline", "first_chunk", "steady_chunk", "final_chunk"}
    assert set(runners[EST][1]) == {"first_chunk", "steady_chunk", "final_chunk"}
    for session, vectors in runners.values():
        results = check_vectors(session, vectors)
        assert results and all(c.passed for c in results), [c.line() for c in results if not c.passed]


def test_specs_read_sizes_from_the_model(v3_pack, tiny_v3_model):
    flow = tiny_v3_model.flow
    prep, est = v3_pack.graph(PREP).spec(), v3_pack.graph(EST).spec()
    assert prep.input_names == ["token", "context", "finalize", "embedding", "prompt_feat"]
    assert prep.output_names == ["mu", "spks", "cond"]
    assert prep.dims["frames"].derived_from == {"dim": "tokens", "scale": flow.token_mel_ratio, "offset": 0}
    assert prep.facts["pre_lookahead_len"] == flow.pre_lookahead_len and prep.dims["prompt_frames"].min == 0
    assert est.input_names == ["x", "mask", "mu", "t", "spks", "cond", "streaming"]
    assert est.facts["static_chunk_size"] == flow.decoder.estimator.static_chunk_size
    assert est.facts["inference_cfg_rate"] == pytest.approx(flow.decoder.inference_cfg_rate)
    assert est.facts["velocity_masked"] is False
    assert v3_pack.data("flow.rand_noise").shape == tuple(flow.decoder.rand_noise.shape)
    np.testing.assert_array_equal(v3_pack.data("flow.rand_noise"), flow.decoder.rand_noise.numpy())
    assert set(est.profiles) == {"stream", "offline"} and set(prep.profiles) == {"stream", "offline"}


def test_full_size_architecture_gives_a_complete_spec(v3_pack):
    """The shipped Fun-CosyVoice3-0.5B-2512 sizes (DiT 1024 x 22 blocks, lookahead 1024 channels), built on
    the meta device (no weights): both specs build and pass check_declarations, sizes read from the modules."""
    import torch
    from hyperpyyaml import load_hyperpyyaml

    from exporters.graphs.flow_v3 import EstimatorV3Exporter, FlowPrepV3Exporter
    from exporters.model.upstream import require_upstream
    from exporters.random.config_v3 import render_v3_yaml
    from specs.chunk_policy import ChunkPolicy

    require_upstream()
    text = re.sub(r"^(llm|hift):.*?(?=^\S|\Z)", "", render_v3_yaml("full"), flags=re.M | re.S)
    with torch.device("meta"):
        flow = load_hyperpyyaml(text)["flow"].eval()
    assert (flow.decoder.estimator.dim, len(flow.decoder.estimator.transformer_blocks)) == (1024, 22)
    policy = ChunkPolicy.from_manifest(v3_pack.audio)
    model = SimpleNamespace(flow=flow)
    est = EstimatorV3Exporter().graph_spec(model, policy)
    prep = FlowPrepV3Exporter().graph_spec(model, policy)
    assert "22 blocks of width 1024" in est.description
    assert [t.shape for t in est.inputs[:3]] == [[2, 80, "frames"], [2, 1, "frames"], [2, 80, "frames"]]
    assert est.facts["static_chunk_size"] == 50 and prep.facts["token_mel_ratio"] == 2


def test_finalize_ignores_context_and_non_final_uses_it(runners):
    session, vectors = runners[PREP]
    final, _ = vectors["final_chunk"]
    other = dict(final, context=(final["context"] + 1) % 6561)
    np.testing.assert_array_equal(session.run(final)["mu"], session.run(other)["mu"])
    steady, _ = vectors["steady_chunk"]
    other = dict(steady, context=(steady["context"] + 1) % 6561)
    diff = np.abs(session.run(steady)["mu"] - session.run(other)["mu"])
    assert diff.max() > 1e-2  # measured 0.61 (tiny): the lookahead reaches the last frames
    look, ratio = steady["context"].shape[1], session.spec.facts["token_mel_ratio"]
    # conv1 (kernel look + 1) then causal conv2 (kernel 3): the context reaches only the last `look` tokens
    assert not diff[:, :, : -ratio * look].any()


@pytest.mark.parametrize("n_tokens", [1, 2, 26, 77])
def test_prep_odd_lengths_match_upstream(tiny_v3_model, runners, n_tokens):
    from exporters.graphs.flow_encoder import upstream_pre_ode

    session, _ = runners[PREP]
    look = tiny_v3_model.flow.pre_lookahead_len
    rng = np.random.default_rng(n_tokens)
    for finalize in (False, True):
        gen = rng.integers(0, 6561, (1, n_tokens + (0 if finalize else look)))
        prompt = rng.integers(0, 6561, (1, 5))
        feat = rng.standard_normal((1, 10, 80)).astype(np.float32)
        emb = rng.standard_normal((1, 192)).astype(np.float32)
        want = upstream_pre_ode(tiny_v3_model, gen, prompt, feat, emb, not finalize, finalize)
        prefix = np.concatenate([prompt, gen], axis=1)
        token, context = (prefix, np.zeros((1, look), np.int64)) if finalize else (prefix[:, :-look], gen[:, -look:])
        got = session.run(
            {
                "token": token.astype(np.int64),
                "context": context.astype(np.int64),
                "finalize": np.array([finalize]),
                "embedding": emb,
                "prompt_feat": feat,
            }
        )
        for name in ("mu", "spks", "cond"):
            tol = session.spec.tolerances[name]
            np.testing.assert_allclose(got[name], want[name], atol=tol.atol, rtol=tol.rtol)


def _full_vs_chunk(session, feed):
    full = session.run(dict(feed, streaming=np.array([False])))["velocity"]
    chunk = session.run(dict(feed, streaming=np.array([True])))["velocity"]
    return np.abs(full - chunk)


def test_streaming_flag_selects_the_chunk_mask(runners):
    """Block-causal 50-frame chunks change the velocity once the sequence spans several chunks; a sequence of
    one chunk sees the same frames under both masks."""
    session, vectors = runners[EST]
    steady, _ = vectors["steady_chunk"]  # 184 frames: 4 chunks
    diff = _full_vs_chunk(session, steady)
    assert diff.max() > 1e-2  # measured 7.8e-2 (tiny; 7.2e-2 on final_chunk's 226 frames) vs the 2e-4 tolerance
    one, _ = vectors["first_chunk"]  # 50 frames: one chunk
    np.testing.assert_array_equal(*(session.run(dict(one, streaming=np.array([s])))["velocity"] for s in (False, True)))


@pytest.mark.parametrize("frames", [1, 51, 173, 300])
def test_estimator_lengths_match_upstream(tiny_v3_model, runners, frames):
    """Lengths outside the vectors (traced at 184 frames) against the upstream DiT, both masks."""
    import torch

    session, _ = runners[EST]
    tol = session.spec.tolerances["velocity"]
    est = tiny_v3_model.flow.decoder.estimator
    rng = np.random.default_rng(frames)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    feed = {
        "x": np.repeat(f(1, 80, frames), 2, axis=0),
        "mask": np.ones((2, 1, frames), np.float32),
        "mu": np.concatenate([f(1, 80, frames), np.zeros((1, 80, frames), np.float32)]),
        "t": np.full(2, 0.3, np.float32),
        "spks": np.concatenate([0.1 * f(1, 80), np.zeros((1, 80), np.float32)]),
        "cond": np.zeros((2, 80, frames), np.float32),
    }
    for streaming in (True, False):
        with torch.no_grad():
            want = est(*(torch.from_numpy(feed[k]) for k in feed), streaming=streaming).numpy()
        got = session.run(dict(feed, streaming=np.array([streaming])))["velocity"]
        np.testing.assert_allclose(got, want, atol=tol.atol, rtol=tol.rtol)


def test_export_leaves_the_dit_in_eval_mode(tiny_v3_model, runners, tmp_path):
    """Pitfall (v1-v3-export.md section 3): exporting a wrapper flips the wrapped DiT (dropout 0.1) to train mode
    unless the wrapper is eval()-ed."""
    from exporters.graphs.flow_v3 import EstimatorV3Exporter
    from exporters.pipeline.onnx_export import torch_export

    exporter = EstimatorV3Exporter()
    est = tiny_v3_model.flow.decoder.estimator
    try:
        feed, _ = runners[EST][1]["first_chunk"]
        torch_export(exporter, tiny_v3_model, exporter.spec(tiny_v3_model), feed, tmp_path / "est.onnx")
        assert not any(m.training for m in est.modules())
    finally:
        tiny_v3_model.flow.eval()


# --- token -> mel: flow.prep + 10 CFG Euler steps over the estimator (ONNX Runtime) vs upstream flow.inference


def _ort_token2mel(runners, noise, gen, prompt, feat, emb, streaming, finalize):
    from runtime.flow_stage import ode_schedule

    prep, _ = runners[PREP]
    est, _ = runners[EST]
    facts = est.spec.facts
    look = prep.spec.facts["pre_lookahead_len"]
    prefix = np.concatenate([prompt, gen], axis=1).astype(np.int64)
    if finalize:
        token, context = prefix, np.zeros((1, look), np.int64)
    else:
        token, context = prefix[:, :-look], prefix[:, -look:]
    p = prep.run(
        {"token": token, "context": context, "finalize": np.array([finalize]), "embedding": emb, "prompt_feat": feat}
    )
    mu, spks, cond = p["mu"], p["spks"], p["cond"]
    frames = mu.shape[2]
    x = noise[:, :, :frames].copy()
    cfg = np.float32(facts["inference_cfg_rate"])
    zeros = np.zeros_like
    for t, dt in ode_schedule(int(facts["n_timesteps"]), facts["t_scheduler"]):
        v = est.run(
            {
                "x": np.concatenate([x, x]),
                "mask": np.ones((2, 1, frames), np.float32),
                "mu": np.concatenate([mu, zeros(mu)]),
                "t": np.array([t, t], np.float32),
                "spks": np.concatenate([spks, zeros(spks)]),
                "cond": np.concatenate([cond, zeros(cond)]),
                "streaming": np.array([streaming]),
            }
        )["velocity"]
        x = x + dt * ((np.float32(1) + cfg) * v[:1] - cfg * v[1:])
    return x[:, :, feat.shape[1] :]


def _upstream_mel(model, gen, prompt, feat, emb, streaming, finalize):
    import torch

    i32 = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(torch.int32)  # noqa: E731
    mel, _ = model.flow.inference(
        token=i32(gen),
        token_len=torch.tensor([gen.shape[1]], dtype=torch.int32),
        prompt_token=i32(prompt),
        prompt_token_len=torch.tensor([prompt.shape[1]], dtype=torch.int32),
        prompt_feat=torch.from_numpy(feat),
        prompt_feat_len=torch.tensor([feat.shape[1]], dtype=torch.int32),
        embedding=torch.from_numpy(emb),
        streaming=streaming,
        finalize=finalize,
    )
    return mel.numpy()


# (prompt tokens, generated tokens incl. lookahead, streaming, finalize): upstream's CosyVoice3Model calls
# non-final chunks with stream=True, finalize=False and the last (or the offline) call with False, True.
CHAIN = {"streaming_chunk": (17, 8 + 50 + 25 + 3, True, False), "final_call": (17, 121, False, True)}


@pytest.mark.parametrize("case", sorted(CHAIN))
def test_token2mel_chain_matches_upstream_flow_inference(tiny_v3_model, v3_pack, runners, case):
    from exporters.oracles.flow import TOKEN2MEL_TOLERANCE_V3 as TOL

    n_prompt, n_gen, streaming, finalize = CHAIN[case]
    rng = np.random.default_rng(n_gen)
    prompt = rng.integers(0, 6561, (1, n_prompt))
    gen = rng.integers(0, 6561, (1, n_gen))
    feat = (-5.0 + 2.0 * rng.standard_normal((1, 2 * n_prompt, 80))).astype(np.float32)
    emb = rng.standard_normal((1, 192)).astype(np.float32)
    noise = v3_pack.data("flow.rand_noise")
    want = _upstream_mel(tiny_v3_model, gen, prompt, feat, emb, streaming, finalize)
    got = _ort_token2mel(runners, noise, gen, prompt, feat, emb, streaming, finalize)
    assert got.shape == want.shape
    # measured max |err| 1.4e-6 (streaming chunk) and 1.3e-6 (final call), |mel| up to ~5.5
    np.testing.assert_allclose(got, want, atol=TOL.atol, rtol=TOL.rtol)
    # the other mask is refused: on a streaming chunk that is what upstream's full-attention ONNX estimator does
    wrong = _ort_token2mel(runners, noise, gen, prompt, feat, emb, not streaming, finalize)
    assert np.abs(wrong - want).max() > 100 * TOL.atol  # measured 0.11 (streaming chunk), 0.14 (final call)
