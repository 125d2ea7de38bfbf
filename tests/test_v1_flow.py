"""CosyVoice 1 flow graphs (exporters/graphs/flow_v1.py) and the runtime's v1 flow call (runtime/flow_v1.py).

`flow.encoder` and `flow.decoder.estimator`, exported through the real pack pipeline from the tiny random-init v1
bundle, reproduce upstream's `MaskedDiffWithXvec` on every case; the encoder's regulator takes upstream's
lengths and its N > 40 head/mid/tail branch at every N, with and without a prompt, from one graph; and
`V1FlowStage.inference` reproduces upstream `flow.inference` (the same noise injected into upstream's
`randn_like`) offline and over upstream `CosyVoiceModel.tts`'s own window chain with the flow cache carried."""

import contextlib

import numpy as np
import pytest

from backends.ort import OrtRunner
from specs.compare import check_vectors
from specs.pack import Pack

pytestmark = pytest.mark.oracle

ENC, EST = "flow.encoder", "flow.decoder.estimator"
N_LIST = [1, 7, 40, 41, 60, 120, 173]


@pytest.fixture(scope="module")
def v1_pack(tiny_v1_bundle, tmp_path_factory):
    import exporters.graphs
    from exporters.graphs.flow_v1 import EstimatorV1Exporter, FlowEncoderV1Exporter
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack

    out = tmp_path_factory.mktemp("v1-flow") / "pack"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(exporters.graphs.REGISTRY_V1, ENC, FlowEncoderV1Exporter)
        mp.setitem(exporters.graphs.REGISTRY_V1, EST, EstimatorV1Exporter)
        export_pack(tiny_v1_bundle, out, [ENC, EST], ExportOptions(seed=0, log=lambda m: None), log=lambda m: None)
    return Pack.open(out)


@pytest.fixture(scope="module")
def runners(v1_pack):
    out = {}
    for name in (ENC, EST):
        entry = v1_pack.graph(name)
        out[name] = (OrtRunner(entry.onnx_path, entry.spec()), entry.vectors())
    return out


@pytest.fixture(scope="module")
def stage(v1_pack):
    from runtime.flow_v1 import V1FlowStage

    return V1FlowStage(v1_pack)


def _inputs(model, seed, n_prompt, n_gen):
    """Random prompt tokens, generated tokens, prompt mel (3 frames longer than its tokens' length: upstream does
    not tie them in v1) and x-vector."""
    from exporters.graphs.flow_v1 import mel_len

    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, 4096, (1, n_prompt))
    gen = rng.integers(0, 4096, (1, n_gen))
    frames = mel_len(n_prompt, model.flow.input_frame_rate) + 3 if n_prompt else 0
    feat = (-5.0 + 2.0 * rng.standard_normal((1, frames, 80))).astype(np.float32)
    emb = rng.standard_normal((1, 192)).astype(np.float32)
    return prompt, gen, feat, emb


# ---- the export ---------------------------------------------------------------------------------------------


def test_export_passes_every_case(runners):
    assert set(runners[ENC][1]) == {
        "offline",
        "window_prompt",
        "window_no_prompt",
        "final_short",
        "split_edge",
        "one_token",
    }
    assert set(runners[EST][1]) == {"window_prompt", "window_no_prompt", "offline_odd", "one_frame"}
    for session, vectors in runners.values():
        results = check_vectors(session, vectors)
        assert results and all(c.passed for c in results), [c.line() for c in results if not c.passed]


def test_specs_read_sizes_and_rules_from_the_model(v1_pack, tiny_v1_model):
    from exporters.graphs.flow_v1 import mel_len

    flow = tiny_v1_model.flow
    rate = int(flow.input_frame_rate)
    enc, est = v1_pack.graph(ENC).spec(), v1_pack.graph(EST).spec()
    assert enc.input_names == ["prompt_token", "token", "embedding", "prompt_feat"]
    assert enc.output_names == ["mu", "spks", "cond"]
    assert est.input_names == ["x", "mask", "mu", "t", "spks", "cond"]  # upstream export_onnx.py's, no streaming
    assert est.output_names == ["velocity"]
    assert enc.facts["input_frame_rate"] == rate == 50
    assert enc.facts["regulator"]["edge_frames"] == mel_len(20, rate) == 34
    assert enc.facts["mel_len_rule"]["divisor"] == rate * 256
    assert est.facts["noise"] == "runtime" and est.facts["inference_cfg_rate"] == pytest.approx(0.7)
    assert est.facts["flow_cache_frames"] == v1_pack.chunk_policy.flow_cache_frames == 34
    assert est.facts["t_scheduler"] == str(flow.decoder.t_scheduler)
    assert "flow.rand_noise" not in v1_pack.manifest.get("data", {})  # v1 draws noise per call
    for spec in (enc, est):
        assert set(spec.profiles) == {"stream", "offline"}
        assert spec.precisions["fp16"].backends == ("ort",)  # TensorRT fp16: upstream's NaN reports
    # profiles from the window policy: a stream call's opt is one 100 + 20 token window
    (no_prompt, with_prompt) = enc.profiles["stream"]
    assert no_prompt.dims["tokens"].opt == 120 and no_prompt.dims["prompt_frames"].max == 0
    assert with_prompt.dims["prompt_frames"].opt == v1_pack.chunk_policy.mel(with_prompt.dims["prompt_tokens"].opt)


def test_integer_length_rule_is_upstreams_float_rule():
    """The graph's int64 rule N * 22050 // (rate * 256) equals upstream's int(N / rate * 22050 / 256) over the
    graph's whole range, and exact_token_limit finds where the float form first drops (notes: equal for N < 8,960
    at 50 Hz, N < 4,480 at 25 Hz)."""
    from exporters.graphs.flow_v1 import exact_token_limit, mel_len

    for rate in (50, 25):
        limit = exact_token_limit(rate, 20000)
        assert limit == (8959 if rate == 50 else 4479)
        assert (limit + 1) * 22050 // (rate * 256) == mel_len(limit + 1, rate) + 1
        assert all(n * 22050 // (rate * 256) == mel_len(n, rate) for n in range(1, limit + 1))


def test_frame_sources_reproduce_torch_interpolate(tiny_v1_model):
    """The gather + lerp equals upstream's F.interpolate calls (before the regulator's convs) to fp32 lerp
    rounding, up to long windows where a float32-rounded src (no single rounding) would be off by ~1e-4."""
    import torch

    from exporters.graphs.flow_v1 import frame_sources, mel_len, regulated_frames

    reg = tiny_v1_model.flow.length_regulator
    rate = int(tiny_v1_model.flow.input_frame_rate)
    sources = frame_sources(rate)
    g = torch.Generator().manual_seed(0)
    for n in N_LIST + [1742]:
        for p, frames1 in ((0, 0), (17, 32)):
            h = torch.randn(1, p + n, 80, generator=g)
            with torch.no_grad(), _identity_convs(reg):
                want, _ = reg.inference(h[:, :p], h[:, p:], frames1, mel_len(n, rate), rate)
            nt, pt, f1 = torch.tensor(n), torch.tensor(p), torch.tensor(frames1)
            i0, i1, w0, w1 = sources(pt, nt, f1, regulated_frames(nt, rate))
            got = h.index_select(1, i0) * w0 + h.index_select(1, i1) * w1  # (1, T, 80), as upstream returns it
            assert got.shape == want.shape
            assert (got - want).abs().max() <= 1e-6, (n, p)


@contextlib.contextmanager
def _identity_convs(reg):
    """The regulator without its convs: upstream's interpolation output itself."""
    import torch

    saved, reg.model = reg.model, torch.nn.Identity()
    try:
        yield
    finally:
        reg.model = saved


@pytest.mark.parametrize("n_tokens", N_LIST)
def test_encoder_lengths_and_branch_match_upstream(tiny_v1_model, runners, n_tokens):
    """One graph, every N, with and without a prompt: upstream's frame count and both regulator branches."""
    from exporters.graphs.flow_v1 import mel_len
    from exporters.oracles.flow_v1 import upstream_pre_ode_v1

    session, _ = runners[ENC]
    for n_prompt in (0, 17):
        prompt, gen, feat, emb = _inputs(tiny_v1_model, n_tokens * 10 + n_prompt, n_prompt, n_tokens)
        want = upstream_pre_ode_v1(tiny_v1_model, gen, prompt, feat, emb)
        got = session.run({"prompt_token": prompt, "token": gen, "embedding": emb, "prompt_feat": feat})
        assert got["mu"].shape[2] == feat.shape[1] + mel_len(n_tokens, 50) == want["mu"].shape[2]
        for name in ("mu", "spks", "cond"):
            tol = session.spec.tolerances[name]
            np.testing.assert_allclose(got[name], want[name], atol=tol.atol, rtol=tol.rtol, err_msg=name)


def test_the_other_regulator_branch_would_be_caught(tiny_v1_model, runners):
    """At N = 60 (> 40) resizing the window as one segment, as the N <= 40 branch does, moves mu far beyond its
    tolerance: the parity above tells the branches apart."""
    import torch

    from exporters.oracles.flow_v1 import upstream_pre_ode_v1

    reg = tiny_v1_model.flow.length_regulator
    prompt, gen, feat, emb = _inputs(tiny_v1_model, 7, 17, 60)
    real = reg.inference

    def one_segment(x1, x2, mel_len1, mel_len2, rate=50):
        x2 = torch.nn.functional.interpolate(x2.transpose(1, 2).contiguous(), size=mel_len2, mode="linear")
        x1 = torch.nn.functional.interpolate(x1.transpose(1, 2).contiguous(), size=mel_len1, mode="linear")
        return reg.model(torch.concat([x1, x2], dim=2)).transpose(1, 2).contiguous(), mel_len1 + mel_len2

    reg.inference = one_segment
    try:
        wrong = upstream_pre_ode_v1(tiny_v1_model, gen, prompt, feat, emb)["mu"]
    finally:
        reg.inference = real
    session, _ = runners[ENC]
    got = session.run({"prompt_token": prompt, "token": gen, "embedding": emb, "prompt_feat": feat})["mu"]
    assert np.abs(got - wrong).max() > 100 * session.spec.tolerances["mu"].atol  # measured 0.66 (tiny)


@pytest.mark.parametrize("frames", [1, 2, 33, 172, 501])
def test_estimator_lengths_match_upstream(tiny_v1_model, runners, frames):
    """Lengths outside the vectors (traced at 235 frames), odd and even: the U-Net's crops."""
    import torch

    session, _ = runners[EST]
    tol = session.spec.tolerances["velocity"]
    rng = np.random.default_rng(frames)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    zeros = np.zeros((1, 80, frames), np.float32)
    feed = {
        "x": np.repeat(f(1, 80, frames), 2, axis=0),
        "mask": np.ones((2, 1, frames), np.float32),
        "mu": np.concatenate([f(1, 80, frames), zeros]),
        "t": np.full(2, 0.3, np.float32),
        "spks": np.concatenate([0.1 * f(1, 80), np.zeros((1, 80), np.float32)]),
        "cond": np.concatenate([f(1, 80, frames), zeros]),
    }
    with torch.no_grad():
        want = tiny_v1_model.flow.decoder.estimator(*(torch.from_numpy(feed[k]) for k in feed)).numpy()
    np.testing.assert_allclose(session.run(feed)["velocity"], want, atol=tol.atol, rtol=tol.rtol)


# ---- the runtime's flow call vs upstream flow.inference --------------------------------------------------------


def test_flow_noise_is_seeded_per_call():
    from specs.noise import FlowNoise

    a, b = FlowNoise(7, 80), FlowNoise(8, 80)
    np.testing.assert_array_equal(a(3, 50), FlowNoise(7, 80)(3, 50))
    assert a(3, 50).shape == (1, 80, 50) and a(3, 50).dtype == np.float32
    assert not np.array_equal(a(3, 50), a(4, 50)) and not np.array_equal(a(3, 50), b(3, 50))
    big = a(0, 5000)
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1) < 0.01


@pytest.mark.parametrize("n_prompt", [0, 17])
def test_offline_call_matches_upstream(tiny_v1_model, stage, n_prompt):
    from exporters.oracles.flow_v1 import TOKEN2MEL_TOLERANCE_V1 as TOL
    from exporters.oracles.flow_v1 import upstream_flow_call
    from specs.noise import FlowNoise

    prompt, gen, feat, emb = _inputs(tiny_v1_model, 100 + n_prompt, n_prompt, 87)
    noise = FlowNoise(1, 80)(0, stage.frames(gen.shape[1], feat.shape[1]))
    want, want_cache = upstream_flow_call(tiny_v1_model, gen, prompt, feat, emb, noise)
    got, cache = stage.inference(gen, prompt, feat, emb, noise)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=TOL.atol, rtol=TOL.rtol)
    # the new cache: z exactly, mu to the encoder's tolerance
    np.testing.assert_array_equal(cache.z, want_cache[..., 0])
    mu_tol = stage.encoder.spec.tolerances["mu"]
    np.testing.assert_allclose(cache.mu, want_cache[..., 1], atol=mu_tol.atol, rtol=mu_tol.rtol)
    assert cache.frames == feat.shape[1] + stage.cache_frames


@pytest.mark.parametrize("n_prompt", [0, 17])
def test_window_chain_matches_upstream_token2wav(tiny_v1_model, v1_pack, stage, n_prompt):
    """Upstream CosyVoiceModel.tts(stream=True) over 220 tokens cuts windows [0, 120), [100, 220) and a final
    [200, 220); the runtime, driven by the pack's window schedule with the flow cache carried, gives each call's
    mel within the token->mel bound. Dropping the cache on a later call is caught."""
    from exporters.oracles.flow_v1 import TOKEN2MEL_TOLERANCE_V1 as TOL
    from exporters.oracles.flow_v1 import upstream_stream_mels
    from runtime.flow_v1 import FlowCache
    from specs.noise import FlowNoise

    prompt, tokens, feat, emb = _inputs(tiny_v1_model, 200 + n_prompt, n_prompt, 220)
    noise = FlowNoise(5, 80)
    calls = upstream_stream_mels(tiny_v1_model, tokens, prompt, feat, emb, lambda k, shape: noise(k, shape[2]))
    plan = v1_pack.chunk_policy.schedule(n_prompt).plan(tokens.shape[1])
    assert [(c.start, c.end, c.finalize) for c in calls] == [(0, 120, False), (100, 220, False), (200, 220, True)]
    assert [(c.start, c.end, c.finalize) for c in plan] == [(c.start, c.end, c.finalize) for c in calls]
    cache = FlowCache.empty(80)
    for k, (call, up) in enumerate(zip(plan, calls)):
        window = tokens[:, call.start : call.end]
        z = noise(k, stage.frames(window.shape[1], feat.shape[1]))
        assert up.cache_in_frames == cache.frames
        got, new_cache = stage.inference(window, prompt, feat, emb, z, cache)
        assert got.shape == up.mel.shape
        np.testing.assert_allclose(got, up.mel, atol=TOL.atol, rtol=TOL.rtol, err_msg=f"call {k}")
        np.testing.assert_array_equal(new_cache.z, up.cache_out[..., 0])
        if k == 1:
            stale, _ = stage.inference(window, prompt, feat, emb, z, None)
            assert np.abs(stale - up.mel).max() > 100 * TOL.atol  # the cache matters
        cache = new_cache


def test_inconsistent_calls_are_refused(tiny_v1_model, stage):
    from runtime.flow_v1 import FlowCache
    from specs.errors import ToolError

    prompt, gen, feat, emb = _inputs(tiny_v1_model, 3, 17, 30)
    frames = stage.frames(30, feat.shape[1])
    with pytest.raises(ToolError, match="noise"):
        stage.inference(gen, prompt, feat, emb, np.zeros((1, 80, frames + 1), np.float32))
    with pytest.raises(ToolError, match="both or neither"):
        stage.inference(gen, prompt, feat[:, :0], emb, np.zeros((1, 80, frames - feat.shape[1]), np.float32))
    big = FlowCache(np.zeros((1, 80, frames + 1), np.float32), np.zeros((1, 80, frames + 1), np.float32))
    with pytest.raises(ToolError, match="flow cache"):
        stage.inference(gen, prompt, feat, emb, np.zeros((1, 80, frames), np.float32), big)
