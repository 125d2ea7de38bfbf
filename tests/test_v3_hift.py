"""exporters/graphs/hift_v3.py: the tiny Fun-CosyVoice3 bundle's causal HiFT exports as `hift` (non-final) and
`hift.final` through the shared pipeline (ONNX Runtime vs upstream CausalHiFTGenerator.inference on every case),
the specs state what the runtime needs, and driving the graphs the way CosyVoice3Model.token2wav streams (all
mel so far per call, emit only new samples) gives upstream's own streaming audio. A voiced copy of the bundle
(F0 classifier rescaled) measures the float32-vs-float64 F0 effect the `phase_drift` tolerance allows for."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from specs.compare import compare
from specs.pack import Pack

pytestmark = pytest.mark.oracle

NAMES = ["hift", "hift.final"]
PCM = 32768.0  # PCM16 LSB = 1 / 32768 of full scale


def export(bundle, out):
    import exporters.graphs
    from exporters.graphs.hift_v3 import HiftV3Exporter, HiftV3FinalExporter
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(exporters.graphs.REGISTRY_V3, "hift", HiftV3Exporter)
        mp.setitem(exporters.graphs.REGISTRY_V3, "hift.final", HiftV3FinalExporter)
        export_pack(bundle, out, NAMES, ExportOptions(seed=0, log=lambda m: None), log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def v3_hift_pack(tiny_v3_bundle, tmp_path_factory):
    return export(tiny_v3_bundle, tmp_path_factory.mktemp("v3-hift") / "pack")


def sessions(pack_dir):
    import onnxruntime as ort

    pack = Pack.open(pack_dir)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return {
        n: ort.InferenceSession(str(pack.graph(n).onnx_path), opts, providers=["CPUExecutionProvider"]) for n in NAMES
    }, np.load(pack_dir / pack.manifest["data"]["hift_sine_noise"]["file"])


def graph_call(sess, noise_data, mel, finalize, f0_look=3):
    n = 480 * (mel.shape[2] - (0 if finalize else f0_look))
    return sess[NAMES[finalize]].run(["audio"], {"mel": mel, "noise": noise_data[:, :n]})[0]


def test_export_passes_every_case(v3_hift_pack):
    from backends.ort import check_onnx_file

    pack = Pack.open(v3_hift_pack)
    for name, cases in (("hift", {"first_call", "second_call"}), ("hift.final", {"final_call", "final_only"})):
        assert pack.manifest["graphs"][name]["report"]["passed"]
        entry = pack.graph(name)
        vectors = entry.vectors()
        assert set(vectors) == cases
        results = check_onnx_file(entry.onnx_path, entry.spec(), vectors)  # re-run, not only the report
        assert len(results) == 2 and all(c.passed for c in results), [c.line() for c in results]


def make_voiced(base, path, f0_mean=150.0, peak=0.8):
    """A copy of `base` whose F0 classifier is rescaled to a voiced F0 (mean `f0_mean` Hz, std 0.2 x mean) and
    whose conv_post magnitude bias gives a peak of `peak` (as ci/sweep_hift_gate.py `voiced_bundle` for v2):
    upstream's init gives F0 ~ 0 (unvoiced), where the sine phase and so the F0 precision play no part."""
    import math

    from exporters.model.bundle import Bundle
    from exporters.oracles.flow import upstream_flow_mel
    from exporters.oracles.hift_v3 import upstream_hift_v3
    from exporters.random.calibration import set_f0_classifier

    shutil.copytree(base, path)
    model = Bundle.open(path).build(with_llm=False)
    hift = model.hift
    mel = upstream_flow_mel(model.flow, torch.Generator().manual_seed(1000), n_tokens=100)
    with torch.no_grad():
        set_f0_classifier(hift.f0_predictor, mel, f0_mean, 0.2 * f0_mean)  # spread 20 % of the mean
        limit, hift.audio_limit = hift.audio_limit, float("inf")
        wav = upstream_hift_v3(hift, mel.numpy(), True)
        hift.audio_limit = limit
        n_mag = hift.istft_params["n_fft"] // 2 + 1
        hift.conv_post.bias[:n_mag] += math.log(peak / float(np.abs(wav).max()))  # ISTFT is linear in magnitude
    torch.save(hift.state_dict(), path / "hift.pt")
    return path


@pytest.fixture(scope="module")
def voiced_v3_bundle(tiny_v3_bundle, tmp_path_factory):
    return make_voiced(tiny_v3_bundle, tmp_path_factory.mktemp("v3-voiced") / "tiny-v3-voiced")


@pytest.fixture(scope="module")
def voiced_v3_pack(voiced_v3_bundle, tmp_path_factory):
    return export(voiced_v3_bundle, tmp_path_factory.mktemp("v3-hift-voiced") / "pack")


def f0_session(pack_dir, name):
    """The graph's F0 (the F0 predictor's final Abs, exposed as an extra output of a copy of the graph)."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(Pack.open(pack_dir).graph(name).onnx_path))
    found = [n for n in proto.graph.node if n.op_type == "Abs" and "f0_predictor" in n.name]
    assert len(found) == 1, [n.name for n in found]
    out = found[0].output[0]
    proto.graph.output.append(onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda feed: sess.run([out], feed)[0]


def stream_mel(model, hops, seed=7):
    from exporters.oracles.flow import upstream_flow_mel

    mel = upstream_flow_mel(model.flow, torch.Generator().manual_seed(seed), n_tokens=sum(hops))
    return mel.numpy().astype(np.float32)


def graph_stream(pack_dir, mel, hops, ratio=2):
    """The graphs driven as CosyVoice3Model.token2wav streams: each call gets all mel so far (non-final calls:
    `hift`, the last: `hift.final`), and only samples past those already emitted are emitted."""
    sess, noise = sessions(pack_dir)
    out, frames, emitted = [], 0, 0
    for k, hop in enumerate(hops):
        frames += ratio * hop
        audio = graph_call(sess, noise, np.ascontiguousarray(mel[:, :, :frames]), k == len(hops) - 1)
        out.append(audio[:, emitted:])
        emitted = audio.shape[1]
    return out


def lsb(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() * PCM)


HOPS = [25, 50, 12]  # tokens: upstream's first hop, the second (x stream_scale_factor), a final remainder


def test_spec_io_sizes_facts_and_data(v3_hift_pack, tiny_v3_model):
    from exporters.graphs.hift_v3 import MAX_SECONDS, v3_hift_sizes

    s = v3_hift_sizes(tiny_v3_model)
    spm, held, f0_look = s["samples_per_mel_frame"], s["held_back_frames"], s["f0_lookahead_frames"]
    assert (spm, held, f0_look, s["harmonics"]) == (480, 8, 3, 9)  # the notes' (T - 8) * 480, from the modules
    pack = Pack.open(v3_hift_pack)
    data = np.load(v3_hift_pack / pack.manifest["data"]["hift_sine_noise"]["file"])
    buffer = tiny_v3_model.hift.m_source.l_sin_gen.sine_waves
    assert data.shape == (1, MAX_SECONDS * 24000, 9) == (1, s["max_frames"] * spm, 9)
    np.testing.assert_array_equal(data, buffer[:, : data.shape[1]].numpy())  # upstream's buffer, its first rows
    for name, finalize in (("hift", False), ("hift.final", True)):
        spec = pack.graph(name).spec()
        assert spec.input_names == ["mel", "noise"] and spec.output_names == ["audio"]
        assert spec.input("mel").shape == [1, 80, "frames"] and spec.input("noise").shape == [1, "noise_samples", 9]
        back = 0 if finalize else held
        assert spec.dims["samples"].derived_from == {"dim": "frames", "scale": spm, "offset": -spm * back}
        noise_back = 0 if finalize else f0_look
        assert spec.dims["noise_samples"].derived_from == {"dim": "frames", "scale": spm, "offset": -spm * noise_back}
        assert spec.dims["frames"].max == s["max_frames"] and spec.facts["finalize"] is finalize
        assert spec.facts["noise"]["data"] == "hift_sine_noise" and spec.tolerances["audio"].check == "phase_drift"
        assert set(spec.profiles) == ({"stream", "offline"} if finalize else {"stream"})
        for case, (ins, outs) in pack.graph(name).vectors().items():
            t = ins["mel"].shape[2]
            assert outs["audio"].shape == (1, spm * (t - back)), case  # upstream's own output length
            np.testing.assert_array_equal(ins["noise"], data[:, : spm * (t - noise_back)])


def test_graphs_have_no_random_or_stft_ops_and_model_is_untouched(v3_hift_pack, tiny_v3_model):
    import onnx

    for name in NAMES:
        ops = {n.op_type for n in onnx.load(str(Pack.open(v3_hift_pack).graph(name).onnx_path)).graph.node}
        assert not ops & {"STFT", "DFT", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}
    hift = tiny_v3_model.hift  # the oracle undoes inference's in-place float64 cast of the F0 predictor
    assert {p.dtype for p in hift.f0_predictor.parameters()} == {torch.float32}
    assert hift.m_source.l_sin_gen.sine_waves.shape == (1, 300 * 24000, 9)


def test_streaming_like_token2wav_matches_upstream(v3_hift_pack, tiny_v3_model):
    """Upstream init (unvoiced): the graphs' stream equals upstream's token2wav stream, and chunked equals one
    offline call, to float32 rounding. Measured: stream vs upstream 0.004 LSB; chunked vs offline 0.003 LSB
    (graph) / 0.003 LSB (upstream)."""
    from exporters.oracles.hift_v3 import upstream_hift_v3, upstream_streaming_vocoder_v3

    mel = stream_mel(tiny_v3_model, HOPS)
    got = graph_stream(v3_hift_pack, mel, HOPS)
    ref = upstream_streaming_vocoder_v3(tiny_v3_model.hift, mel, HOPS)
    assert [g.shape for g in got] == [r.shape for r in ref] == [(1, 480 * 42), (1, 480 * 100), (1, 480 * 32)]
    g, r = np.concatenate(got, 1), np.concatenate(ref, 1)
    offline = upstream_hift_v3(tiny_v3_model.hift, mel, True)
    sess, noise = sessions(v3_hift_pack)
    assert lsb(g, r) <= 1.0 and lsb(r, offline) <= 1.0
    assert lsb(g, graph_call(sess, noise, mel, True)) <= 1.0


def test_voiced_export_streaming_and_f0_precision(voiced_v3_pack, voiced_v3_bundle):
    """Voiced F0 (80..230 Hz): the sine phase integrates the F0 predictor's float32 (graph) vs float64
    (upstream) difference. Measured on this bundle: F0 relative error <= 9.2 float32 ulps (budget 64); per-case
    max |err| 2.7e-4 (9 LSB) at bound use 0.05; the graphs' stream vs upstream's token2wav stream 7.6 LSB at
    bound use 0.04; upstream chunked vs offline 0.05 LSB (its float64 F0 is the same for every call length),
    the graphs' chunked vs offline 2.8 LSB: ONNX Runtime's float32 Conv rounds the same output frame
    differently for different input lengths below ~100 frames (first F0 conv already), and the phase
    integrates that, so the graphs' chunk seams are only within the phase_drift bound, not bit-equal."""
    from exporters.graphs.hift import F0_REL_ULPS
    from exporters.model.bundle import Bundle
    from exporters.oracles.hift_v3 import upstream_f0_v3, upstream_hift_v3, upstream_streaming_vocoder_v3

    pack = Pack.open(voiced_v3_pack)
    assert all(pack.manifest["graphs"][n]["report"]["passed"] for n in NAMES)
    model = Bundle.open(voiced_v3_bundle).build(with_llm=False)
    mel = stream_mel(model, HOPS)
    sess, noise = sessions(voiced_v3_pack)
    f0_graph = f0_session(voiced_v3_pack, "hift.final")({"mel": mel, "noise": noise[:, : 480 * mel.shape[2]]})
    f0_up = upstream_f0_v3(model.hift, mel, True)
    assert (f0_up > 10).all()  # voiced everywhere: the phase matters
    assert np.max(np.abs(f0_graph - f0_up) / f0_up) < F0_REL_ULPS * 2.0**-24
    tol = pack.graph("hift.final").spec().tolerances["audio"]
    for name, case in ((n, c) for n in NAMES for c in pack.graph(n).vectors()):
        ins, outs = pack.graph(name).vectors()[case]
        c = compare(sess[name].run(["audio"], ins)[0], outs["audio"], tol, f"{name}/{case}")
        assert c.passed and c.bound_use < 0.5, c.line()
    g = np.concatenate(graph_stream(voiced_v3_pack, mel, HOPS), 1)
    r = np.concatenate(upstream_streaming_vocoder_v3(model.hift, mel, HOPS), 1)
    c = compare(g, r, tol, "stream")
    assert c.passed and c.bound_use < 0.5, c.line()
    assert lsb(r, upstream_hift_v3(model.hift, mel, True)) <= 1.0
    c = compare(g, graph_call(sess, noise, mel, True), tol, "graph chunked vs offline")
    assert c.passed and c.bound_use < 0.5, c.line()


def test_voiced_with_f0_pinned_everything_else_is_float32_rounding(voiced_v3_pack, voiced_v3_bundle):
    """With upstream's F0 pinned to the graph's F0, the graph's source (phase rounding, fixed noise, uv) and
    decoder equal upstream's to float32 rounding: what is left of the voiced error is F0 alone."""
    from exporters.model.bundle import Bundle
    from exporters.oracles.hift_v3 import upstream_hift_v3

    model = Bundle.open(voiced_v3_bundle).build(with_llm=False)
    mel = stream_mel(model, HOPS)
    sess, noise = sessions(voiced_v3_pack)
    f0s = {n: f0_session(voiced_v3_pack, n) for n in NAMES}

    class Pinned(torch.nn.Module):
        condnet = [SimpleNamespace(causal_padding=3)]  # what upstream's non-final trim reads

        def forward(self, x, finalize=True):
            m = np.ascontiguousarray(x.to(torch.float32).numpy())
            n = 480 * (m.shape[2] - (0 if finalize else 3))
            return torch.from_numpy(f0s[NAMES[finalize]]({"mel": m, "noise": noise[:, :n]})).to(x.dtype)

    saved, model.hift.f0_predictor = model.hift.f0_predictor, Pinned()
    try:
        for frames, finalize in ((50, False), (150, False), (mel.shape[2], True)):
            m = np.ascontiguousarray(mel[:, :, :frames])
            err = lsb(graph_call(sess, noise, m, finalize), upstream_hift_v3(model.hift, m, finalize))
            assert err <= 0.25, (frames, finalize, err)  # measured <= 0.065 LSB (2e-6 on a 0.76 peak)
    finally:
        model.hift.f0_predictor = saved
