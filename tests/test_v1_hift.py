"""exporters/graphs/hift_v1.py + runtime/vocoder.py: the tiny CosyVoice 1 bundle's HiFT exports as `hift` through
the shared pipeline (ONNX Runtime vs upstream HiFTGenerator.inference on every case), its spec states what the
runtime needs, and VocoderStage over the graph replays the HiFT part of upstream's own
`CosyVoiceModel.token2wav` stream (mel cache, source cache, hamming(10240) speech fade, speech[:-5120] held back)
with the same noise and initial phase injected into upstream. Both sides get the same post-mel-fade mel: the
windows' mel fade (hamming(68)) runs inside upstream's token2wav, and the mel its HiFT calls receive is what the
runtime's session hands the vocoder. A voiced copy of the bundle (F0 classifier rescaled) exercises the sine
phase, which upstream's init (F0 < 1 Hz: unvoiced) leaves untouched."""

from __future__ import annotations

import math
import shutil
import warnings

import numpy as np
import pytest
import torch

from specs.pack import Pack

pytestmark = pytest.mark.oracle

SEED = 7
TOTAL_TOKENS = 260  # windows [0, 120) and [100, 220) (hop 100 + overlap 20), then a final [200, 260)
RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial"}


def export(bundle, out):
    import exporters.graphs
    from exporters.graphs.hift_v1 import HiftV1Exporter
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(exporters.graphs.REGISTRY_V1, "hift", HiftV1Exporter)
        export_pack(bundle, out, ["hift"], ExportOptions(seed=0, log=lambda m: None), log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def v1_hift_pack(tiny_v1_bundle, tmp_path_factory):
    return export(tiny_v1_bundle, tmp_path_factory.mktemp("v1-hift") / "pack")


def make_voiced(base, path, f0_mean=150.0, peak=0.8):
    """A copy of `base` whose F0 classifier gives a voiced F0 (mean `f0_mean` Hz, std 0.2 x mean) and whose
    conv_post magnitude bias gives a peak of `peak` (as tests/test_v3_hift.py for v3): (path, built model)."""
    from exporters.graphs.hift_v1 import upstream_hift_v1, upstream_v1_flow_mel
    from exporters.model.bundle import Bundle
    from exporters.random.calibration import set_f0_classifier

    shutil.copytree(base, path)
    model = Bundle.open(path).build(with_llm=False)
    hift = model.hift
    mel = upstream_v1_flow_mel(model.flow, 1000, n_tokens=100)
    h = hift.m_source.l_sin_gen.harmonic_num + 1
    with torch.no_grad():
        set_f0_classifier(hift.f0_predictor, mel, f0_mean, 0.2 * f0_mean)
        limit, hift.audio_limit = hift.audio_limit, float("inf")
        noise = np.zeros((1, 256 * mel.shape[2], h), np.float32)
        wav, _ = upstream_hift_v1(hift, mel.numpy(), np.zeros((1, 1, 0), np.float32), noise, np.zeros((1, h)))
        hift.audio_limit = limit
        n_mag = hift.istft_params["n_fft"] // 2 + 1
        hift.conv_post.bias[:n_mag] += math.log(peak / float(np.abs(wav).max()))  # ISTFT is linear in magnitude
    torch.save(hift.state_dict(), path / "hift.pt")
    return path, model


@pytest.fixture(scope="module")
def voiced_v1(tiny_v1_bundle, tmp_path_factory):
    """(the voiced bundle's hift pack, its built model)."""
    path, model = make_voiced(tiny_v1_bundle, tmp_path_factory.mktemp("v1-voiced") / "tiny-v1-voiced")
    return export(path, tmp_path_factory.mktemp("v1-hift-voiced") / "pack"), model


@pytest.fixture(scope="module")
def windows(tiny_v1_model):
    """The flow windows of a TOTAL_TOKENS stream (upstream's window schedule), as slices of one flow mel:
    consecutive windows share their mel_overlap_len frames, as upstream's flow windows do."""
    from exporters.graphs.hift_v1 import upstream_v1_flow_mel
    from exporters.model.facts import chunk_policy

    policy = chunk_policy(tiny_v1_model)
    calls = policy.schedule(0).plan(TOTAL_TOKENS)
    assert [(c.start, c.end, c.finalize) for c in calls] == [(0, 120, False), (100, 220, False), (200, 260, True)]
    mel = upstream_v1_flow_mel(tiny_v1_model.flow, 3, TOTAL_TOKENS).numpy()
    assert mel.shape == (1, 80, policy.mel(TOTAL_TOKENS))
    starts = [policy.mel(c.start) for c in calls]
    return policy, [np.ascontiguousarray(mel[:, :, a : a + policy.mel(c.end - c.start)]) for a, c in zip(starts, calls)]


class _WindowFlow:
    """Stands in for the flow inside upstream `CosyVoiceModel.token2wav`: returns the next window's mel."""

    def __init__(self, windows, input_frame_rate):
        self.windows, self.input_frame_rate = list(windows), input_frame_rate

    def inference(self, flow_cache, **_):
        return torch.from_numpy(self.windows.pop(0)), flow_cache


def upstream_stream(hift, policy, windows, seed=SEED, f0=None):
    """Upstream CosyVoiceModel.token2wav over `windows` (the last one final), each of its HiFT calls with the
    noise and initial phase the runtime's VocoderStage uses for the same call. Returns (the speech each
    token2wav call returns, the mel each HiFT call received)."""
    from cosyvoice.cli.model import CosyVoiceModel

    from exporters.graphs.hift_v1 import injected_sinegen
    from specs.noise import FrameNoise, phase_uniforms

    h = hift.m_source.l_sin_gen.harmonic_num + 1
    noise = FrameNoise(seed, policy.samples_per_mel_frame, h)
    up = CosyVoiceModel(None, _WindowFlow(windows, policy.token_rate), hift)
    assert (up.mel_cache_len, up.source_cache_len, len(up.speech_window)) == (
        policy.mel_cache_len,
        policy.source_cache_len,
        policy.crossfade.length,
    )
    real, mels, state = hift.inference, [], {"next": 0}

    def inference(speech_feat, cache_source):
        cached = policy.mel_cache_len if mels else 0
        first, frames = state["next"] - cached, speech_feat.shape[2]
        mels.append(speech_feat.numpy().copy())
        with injected_sinegen(noise(first, frames), phase_uniforms(seed, len(mels) - 1, h)) as calls:
            out = real(speech_feat=speech_feat, cache_source=cache_source)
        assert calls == {"rand": 1, "randn_like": 1}
        state["next"] += frames - cached
        return out

    uuid = "oracle"
    up.hift_cache_dict[uuid], up.mel_overlap_dict[uuid], up.flow_cache_dict[uuid] = (
        None,
        torch.zeros(1, 80, 0),
        torch.zeros(1, 80, 0, 2),
    )
    hift.inference, saved_f0 = inference, hift.f0_predictor
    if f0 is not None:
        hift.f0_predictor = f0
    speech = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.cuda.amp.autocast deprecation inside token2wav
            for k in range(len(windows)):
                out = up.token2wav(
                    token=torch.zeros(1, 1, dtype=torch.int32),
                    prompt_token=torch.zeros(1, 0, dtype=torch.int32),
                    prompt_feat=torch.zeros(1, 0, 80),
                    embedding=torch.zeros(1, 192),
                    uuid=uuid,
                    finalize=k == len(windows) - 1,
                )
                speech.append(out.numpy()[0].copy())
    finally:
        del hift.inference  # back to the class method
        hift.f0_predictor = saved_f0
    return speech, mels


def runtime_stream(pack_dir, policy, mels, seed=SEED):
    """VocoderStage over the graph, pushed the post-fade mel upstream's HiFT calls got (their new frames):
    (float audio of each call, the feeds sent to the graph)."""
    from runtime.vocoder import VocoderStage

    stage = VocoderStage.from_pack(Pack.open(pack_dir), seed=seed)
    feeds, run = [], stage.session.run

    def recording_run(feed, *args, **kwargs):
        feeds.append({k: v.copy() for k, v in feed.items()})
        return run(feed, *args, **kwargs)

    stage.session.run = recording_run
    out = []
    for k, mel in enumerate(mels):
        new = mel[:, :, policy.mel_cache_len if k else 0 :]
        out.append(stage._synthesize(np.ascontiguousarray(new), final=k == len(mels) - 1))
    return out, feeds


def lsb(a, b) -> int:
    """Largest PCM16 difference (LSB) between two float signals after the runtime's PCM conversion."""
    from runtime.vocoder import pcm16

    return int(np.abs(pcm16(a).astype(np.int32) - pcm16(b).astype(np.int32)).max())


def f0_session(pack_dir, tmp_path):
    """mel -> the graph's F0: the graph cut at the F0 predictor's final Abs (onnx.utils.extract_model)."""
    import onnx
    import onnxruntime as ort

    path = Pack.open(pack_dir).graph("hift").onnx_path
    found = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Abs" and "f0_predictor" in n.name]
    assert len(found) == 1, [n.name for n in found]
    onnx.utils.extract_model(str(path), str(tmp_path / "f0.onnx"), ["mel"], [found[0].output[0]])
    sess = ort.InferenceSession(str(tmp_path / "f0.onnx"), providers=["CPUExecutionProvider"])
    return lambda mel: sess.run(None, {"mel": mel})[0]


class PinnedF0(torch.nn.Module):
    """Upstream's F0 predictor replaced by the graph's F0 (isolates everything after F0)."""

    def __init__(self, f0):
        super().__init__()
        self.f0 = f0

    def forward(self, mel):
        return torch.from_numpy(self.f0(np.ascontiguousarray(mel.numpy())))


# ---- export and spec -------------------------------------------------------------------------------------


def test_export_passes_every_case(v1_hift_pack):
    from backends.ort import check_onnx_file

    pack = Pack.open(v1_hift_pack)
    assert pack.manifest["graphs"]["hift"]["report"]["passed"]
    entry = pack.graph("hift")
    vectors = entry.vectors()
    assert set(vectors) == {"first_chunk", "steady_chunk", "final_chunk"}
    results = check_onnx_file(entry.onnx_path, entry.spec(), vectors)  # re-run, not only the report
    assert len(results) == 6 and all(c.passed for c in results), [c.line() for c in results]


def test_spec_sizes_facts_cases_and_profiles(v1_hift_pack, tiny_v1_model):
    import onnx

    from exporters.graphs.hift_v1 import v1_hift_sizes

    pack = Pack.open(v1_hift_pack)
    spec, policy = pack.graph("hift").spec(), pack.chunk_policy
    s = v1_hift_sizes(tiny_v1_model)
    assert (s["sample_rate"], s["samples_per_mel_frame"], s["harmonics"], s["mel_bins"]) == (22050, 256, 9, 80)
    assert spec.input_names == ["mel", "cache_source", "noise", "phase"] and spec.output_names == ["audio", "source"]
    assert spec.input("noise").shape == [1, "samples", 9] and spec.input("phase").shape == [1, 9]
    assert spec.dims["samples"].derived_from == {"dim": "frames", "scale": 256, "offset": 0}
    assert spec.dims["frames"].max == s["max_frames"] == 60 * 22050 // 256
    f = spec.facts
    assert (f["mel_cache_len"], f["source_cache_len"], f["sample_rate"]) == (20, 5120, 22050)
    assert (policy.mel_cache_len, policy.source_cache_len, policy.sample_rate) == (20, 5120, 22050)
    assert f["initial_phase"]["input"] == "phase" and f["initial_phase"]["per"] == "call"
    assert all(spec.tolerances[o].check == "phase_drift" for o in ("audio", "source"))
    # upstream token2wav's HiFT calls: 206 - 34 frames first, then 20 cached + 172, a final 20 + 37
    vectors = pack.graph("hift").vectors()
    shapes = {c: (ins["mel"].shape[2], ins["cache_source"].shape[2]) for c, (ins, _) in vectors.items()}
    assert shapes == {"first_chunk": (172, 0), "steady_chunk": (192, 5120), "final_chunk": (57, 5120)}
    first_src, steady = vectors["first_chunk"][1]["source"], vectors["steady_chunk"]
    np.testing.assert_array_equal(steady[0]["cache_source"], first_src[:, :, -5120:])
    np.testing.assert_array_equal(steady[1]["source"][:, :, :5120], steady[0]["cache_source"])  # the overwrite
    for case, (ins, outs) in vectors.items():
        assert outs["audio"].shape == (1, 256 * ins["mel"].shape[2]), case
        assert ins["phase"][0, 0] == 0 and np.all(np.abs(ins["phase"]) <= np.float32(np.pi)), case
    ops = {n.op_type for n in onnx.load(str(pack.graph("hift").onnx_path)).graph.node}
    assert not ops & (RANDOM_OPS | {"STFT", "DFT"})
    stream = {p.name: p for p in spec.profiles["stream"]}
    assert stream["first_chunk"].dims["frames"].opt == 172 and stream["later_chunks"].dims["frames"].opt == 192
    assert stream["later_chunks"].dims["cache_samples"].max == 5120 and set(spec.profiles) == {"stream", "offline"}


# ---- the source rewrite and the phase draw -----------------------------------------------------------------


def test_source_rounds_the_per_sample_phase_like_upstream(tiny_v1_model):
    """NoisePhaseDrivenSource vs upstream SineGen + SourceModuleHnNSF (noise and phase injected) on 1200 voiced
    frames (307 200 samples): its per-sample phase sum equals torch's double-accumulated float32 cumsum bit for
    bit (a float32 running sum is off by whole cycles there), and the source agrees to float32 rounding."""
    from exporters.graphs.hift_v1 import injected_sinegen
    from exporters.rewrites.hift_source import NoisePhaseDrivenSource
    from specs.noise import phase_from_uniforms

    hift, frames = tiny_v1_model.hift, 1200
    rng = np.random.default_rng(0)
    f0 = np.clip(150 + np.cumsum(rng.normal(0, 4, frames)), 70, 400).astype(np.float32)
    f0[::17] = rng.uniform(0, 9, f0[::17].shape)  # unvoiced frames in between
    f0 = torch.from_numpy(f0)[None]
    src = NoisePhaseDrivenSource(hift.m_source, 256, 5167)
    inc = f0.unsqueeze(-1) * src.multiples / src.sample_rate
    got_sum = src.sample_phase(inc).reshape(1, -1, 9)
    per_sample = hift.f0_upsamp(f0[:, None]).transpose(1, 2)  # (1, samples, 1), upstream's nearest upsample
    want_sum = torch.cumsum(per_sample * src.multiples / src.sample_rate, dim=1)  # upstream's F_mat, transposed
    assert torch.equal(got_sum, want_sum)
    float32_sum = np.cumsum((per_sample * src.multiples / src.sample_rate).numpy(), axis=1, dtype=np.float32)
    assert np.abs(float32_sum - want_sum.numpy()).max() > 1.0  # the problem is real
    noise = rng.standard_normal((1, 256 * frames, 9)).astype(np.float32)
    u = rng.random((1, 9), dtype=np.float32)
    with injected_sinegen(noise, u), torch.no_grad():
        want = hift.m_source(per_sample)[0].transpose(1, 2)
    with torch.no_grad():
        got = src(f0, torch.from_numpy(noise), torch.from_numpy(phase_from_uniforms(u)))
        zero_phase = src(f0, torch.from_numpy(noise), torch.zeros(1, 9))
    assert float((got - want).abs().max()) <= 1e-7  # measured 3e-8: sin/linear rounding
    assert float((zero_phase - want).abs().max()) > 1e-2  # the initial phase matters: it must be an input


def test_call_phase_is_upstreams_uniform_draw_and_seeded():
    from exporters.graphs.hift_v1 import injected_sinegen
    from runtime.vocoder import call_phase
    from specs.noise import phase_from_uniforms, phase_uniforms

    phases = [call_phase(SEED, k, 9) for k in range(3)]
    for k, phase in enumerate(phases):
        u = phase_uniforms(SEED, k, 9)
        with injected_sinegen(np.zeros((1, 1, 9), np.float32), u):
            want = torch.distributions.Uniform(-np.pi, np.pi).sample((1, 9, 1)).numpy().reshape(1, 9)  # as SineGen
        want[:, 0] = 0
        np.testing.assert_array_equal(phase, want)
        np.testing.assert_array_equal(phase, phase_from_uniforms(u))
        assert phase.dtype == np.float32 and phase[0, 0] == 0 and np.all(np.abs(phase) <= np.pi)
        np.testing.assert_array_equal(phase, call_phase(SEED, k, 9))  # a pure function of (seed, call)
    assert not np.array_equal(phases[0], phases[1]) and not np.array_equal(phases[0], call_phase(SEED + 1, 0, 9))


# ---- streaming: VocoderStage vs upstream token2wav ---------------------------------------------------------


def test_stream_matches_upstream_token2wav(v1_hift_pack, tiny_v1_model, windows):
    """Upstream init (unvoiced): VocoderStage's stream equals upstream's token2wav stream to float32 rounding.
    Measured |err| <= 3e-7 (1 LSB where a sample sits on a rounding boundary); bounds 1 LSB and 2e-6. Planted:
    the noise one frame late gives >= 900 LSB, no speech fade >= 3400 LSB."""
    policy, wins = windows
    want, mels = upstream_stream(tiny_v1_model.hift, policy, wins)
    got, feeds = runtime_stream(v1_hift_pack, policy, mels)
    # HiFT calls: 206 - 34 frames, 20 cached + 206 - 34, 20 cached + the final window's 103; each emits all but
    # the 5120 samples held back, the final call everything: every mel frame of the utterance once
    assert [f["mel"].shape[2] for f in feeds] == [m.shape[2] for m in mels] == [172, 192, 123]
    assert [g.shape[0] for g in got] == [172 * 256 - 5120, 172 * 256, 123 * 256]
    assert sum(g.shape[0] for g in got) == 256 * policy.mel(TOTAL_TOKENS)
    assert [f["cache_source"].shape[2] for f in feeds] == [0, 5120, 5120]
    for g, w in zip(got, want):
        assert g.shape == w.shape and lsb(g, w) <= 1 and float(np.abs(g - w).max()) <= 2e-6


def test_same_seed_is_bitwise_deterministic_and_phase_is_per_call(v1_hift_pack, windows, tiny_v1_model):
    from runtime.vocoder import VocoderStage, call_phase, pcm16

    policy, wins = windows
    _, mels = upstream_stream(tiny_v1_model.hift, policy, wins)
    a, feeds = runtime_stream(v1_hift_pack, policy, mels)
    b, _ = runtime_stream(v1_hift_pack, policy, mels)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    for k, f in enumerate(feeds):
        np.testing.assert_array_equal(f["phase"], call_phase(SEED, k, 9))  # call index k of the utterance
    other, _ = runtime_stream(v1_hift_pack, policy, mels, seed=SEED + 1)
    assert float(np.abs(other[1] - a[1]).max()) > 1e-3
    # after the final call the next utterance starts again at call 0 (and noise frame 0)
    stage = VocoderStage.from_pack(Pack.open(v1_hift_pack), seed=SEED)
    for k, mel in enumerate(mels):
        stage.push(np.ascontiguousarray(mel[:, :, policy.mel_cache_len if k else 0 :]), final=k == len(mels) - 1)
    np.testing.assert_array_equal(stage.push(np.ascontiguousarray(mels[0])), pcm16(a[0]))


# ---- voiced ------------------------------------------------------------------------------------------------


def test_voiced_export_and_stream(voiced_v1, windows, monkeypatch, tmp_path):
    """Voiced F0 (~150 Hz): the sine phase integrates the F0 predictor's ORT-vs-oneDNN float32 rounding
    differences along each call. The gate passes (phase_drift, bound use < 0.5); F0 relative error within the
    tolerance's 64 ulps; the emitted PCM of VocoderStage vs upstream's token2wav within 10 LSB (measured 3: F0
    <= 9 ulps apart delays the end of a 192-frame call by <= 9 * 2^-24 * 49152 = 0.03 samples); with upstream's
    F0 pinned to the graph's F0, 1 LSB (measured 1, |err| 1e-6). The phase call index off by one: >= 100 LSB."""
    import runtime.vocoder
    from backends.ort import OrtRunner, check_onnx_file
    from exporters.graphs.hift import F0_REL_ULPS

    voiced_v1_pack, model = voiced_v1
    entry = Pack.open(voiced_v1_pack).graph("hift")
    gate = check_onnx_file(entry.onnx_path, entry.spec(), entry.vectors())
    assert all(c.passed and c.bound_use < 0.5 for c in gate), [c.line() for c in gate]
    lines = [c.line() for c in gate]
    # the graph zeroes the fundamental's initial phase itself, as upstream does after its draw; the others count
    sess = OrtRunner(entry.onnx_path, entry.spec())
    feed = dict(entry.vectors()["first_chunk"][0])
    base = sess.run(feed)["audio"]
    for h, effect in ((0, False), (1, True)):
        changed = {**feed, "phase": feed["phase"].copy()}
        changed["phase"][0, h] += 1.0
        assert (float(np.abs(sess.run(changed)["audio"] - base).max()) > 1e-3) is effect
    policy, wins = windows
    want, mels = upstream_stream(model.hift, policy, wins)
    f0 = f0_session(voiced_v1_pack, tmp_path)
    for mel in mels:
        with torch.no_grad():
            f0_up = model.hift.f0_predictor(torch.from_numpy(mel)).numpy()
        assert (f0_up > 10).mean() > 0.9  # voiced: the phase matters
        ulps = float(np.max(np.abs(f0(mel) - f0_up) / f0_up)) / 2.0**-24
        lines.append(f"F0 {f0_up.min():.0f}..{f0_up.max():.0f} Hz, graph vs upstream <= {ulps:.1f} float32 ulps")
        assert ulps < F0_REL_ULPS
    got, _ = runtime_stream(voiced_v1_pack, policy, mels)
    assert max(float(np.abs(w).max()) for w in want) > 0.3  # a loud signal
    pinned, _ = upstream_stream(model.hift, policy, wins, f0=PinnedF0(f0))
    for k, (g, w, p) in enumerate(zip(got, want, pinned)):
        lines.append(f"call {k}: {lsb(g, w)} LSB ({lsb(g, p)} with F0 pinned, |err| {np.abs(g - p).max():.1e})")
        assert g.shape == w.shape and lsb(g, w) <= 10 and lsb(g, p) <= 1, "\n".join(lines)
    print("\n".join(lines))
    real = runtime.vocoder.call_phase
    monkeypatch.setattr(runtime.vocoder, "call_phase", lambda seed, k, h: real(seed, k + 1, h))
    wrong, _ = runtime_stream(voiced_v1_pack, policy, mels)
    print("phase of call k + 1:", [lsb(g, w) for g, w in zip(wrong, want)], "LSB")
    assert min(lsb(g, w) for g, w in zip(wrong, want)) >= 100
