"""HiFT streaming acceptance: runtime/vocoder.py over the exported `hift` graph against upstream's own
`CosyVoice2Model.token2wav` (its mel cache, source cache, hamming cross-fade and held-back tail), driven
chunk by chunk with upstream's hops (25, 50, 100 tokens = 50, 100, 200 mel frames, then the final
remainder) and the same noise.

Two comparisons, because the residual error has one known source:
- as is: ORT's and oneDNN's float32 convs round the F0 predictor differently by a few ulps (~3e-5 Hz); the
  sine phase integrates F0 along each call, so the outputs drift apart slowly within a call. Measured
  (tiny bundle, this mel): max |err| 2.0e-4, i.e. up to 7 PCM LSB, on the 200-frame call. Tolerance 6e-4
  (20 LSB): a wrong cache, fade, tail or noise offset gives errors >= 1e-2.
- F0 pinned (upstream's F0 predictor replaced by the graph's own F0): everything after F0 - source, cache
  overwrite, decoder, ISTFT, cross-fade, tail, noise alignment - must then agree to float32 rounding:
  measured max |err| 5e-7; tolerance 5e-6, and PCM within +-1 LSB.
"""

import numpy as np
import pytest

from exporters.oracles.hift import (
    PINNED_FLOAT_TOL,
    PINNED_PCM_TOL_LSB,
    STREAM_FLOAT_TOL,
    STREAM_PCM_TOL_LSB,
    graph_f0,
    pinned_f0,
)
from specs.errors import ToolError
from specs.pack import Pack, write_manifest

SEED = 7
TOTAL_TOKENS = 194  # hops 25, 50, 100, then a final 19


def test_pcm16_rounds_and_saturates():
    from runtime.vocoder import pcm16

    x = np.array([0.0, 0.99, -0.99, 1.07, -1.07, 1.0, -1.0, 0.4 / 32768, 0.6 / 32768, -0.6 / 32768], np.float32)
    got = pcm16(x)
    assert got.dtype == np.dtype("<i2")
    assert got.tolist() == [0, 32440, -32440, 32767, -32768, 32767, -32768, 0, 1, -1]
    # upstream's (x * 2**15).astype(int16) would truncate 0.6 LSB to 0 and wrap 1.07 to a negative sample
    assert (x[3] * 2**15).astype(np.int16) < 0


@pytest.fixture(scope="module")
def stream(tiny_model, hift_pack):
    import torch

    from exporters.oracles.flow import upstream_flow_mel

    pack = Pack.open(hift_pack)
    hops = pack.chunk_policy.schedule(0).hops(TOTAL_TOKENS)
    assert hops == [25, 50, 100, 19]
    mel = upstream_flow_mel(tiny_model.flow, torch.Generator().manual_seed(3), n_tokens=TOTAL_TOKENS).numpy()
    assert mel.shape == (1, 80, 2 * TOTAL_TOKENS)
    return pack, hops, mel


def _runtime_chunks(pack, hops, mel):
    """(float audio, PCM) of each call of one VocoderStage, and the feeds it sent to the graph."""
    from runtime.vocoder import VocoderStage, pcm16

    stage = VocoderStage.from_pack(pack, seed=SEED)
    feeds = []
    run = stage.session.run

    def recording_run(feed, *args, **kwargs):
        feeds.append({name: value.shape for name, value in feed.items()})
        return run(feed, *args, **kwargs)

    stage.session.run = recording_run
    out, start = [], 0
    for k, hop in enumerate(hops):
        chunk = mel[:, :, start : start + 2 * hop]
        audio = stage._synthesize(chunk, final=k == len(hops) - 1)
        out.append((audio, pcm16(audio)))
        start += 2 * hop
    return out, feeds, stage


def _upstream_chunks(tiny_model, pack, hops, mel):
    from exporters.oracles.hift import upstream_streaming_vocoder
    from specs.noise import FrameNoise

    facts = pack.graph("hift").spec().facts
    noise = FrameNoise(SEED, facts["samples_per_mel_frame"], facts["harmonics"])
    return [s[0] for s in upstream_streaming_vocoder(tiny_model.hift, mel, hops, noise_for=noise)]


def _check(got, want, float_tol, pcm_tol):
    from runtime.vocoder import pcm16

    assert [g[0].shape for g in got] == [w.shape for w in want]  # emitted lengths, chunk by chunk
    lines = []
    for k, ((audio, pcm), ref) in enumerate(zip(got, want)):
        err = float(np.abs(audio - ref).max())
        lsb = int(np.abs(pcm.astype(np.int32) - pcm16(ref).astype(np.int32)).max())
        lines.append(f"call {k}: {audio.shape[0]} samples, max |err| {err:.2e}, max PCM diff {lsb} LSB")
        assert err <= float_tol and lsb <= pcm_tol, "\n".join(lines)
    return lines


@pytest.mark.oracle
def test_stream_matches_upstream_token2wav(tiny_model, stream):
    pack, hops, mel = stream
    got, feeds, stage = _runtime_chunks(pack, hops, mel)
    want = _upstream_chunks(tiny_model, pack, hops, mel)
    # lengths: first packet 50 frames * 480 - 3840 held back; the final call emits everything it has left
    assert [g[0].shape[0] for g in got] == [50 * 480 - 3840, 100 * 480, 200 * 480, (8 + 38) * 480]
    _check(got, want, STREAM_FLOAT_TOL, STREAM_PCM_TOL_LSB)
    # every call, the first included, ran through the one `hift` graph; only the cache length differs
    assert stage.session.path == pack.graph("hift").onnx_path
    assert [f["cache_source"] for f in feeds] == [(1, 1, 0)] + [(1, 1, 3840)] * 3
    assert [f["mel"][2] for f in feeds] == [50, 108, 208, 46]
    assert sum(g[0].shape[0] for g in got) == 480 * mel.shape[2]  # every mel frame -> 480 samples, once


@pytest.mark.oracle
def test_stream_with_pinned_f0_is_within_one_lsb(tiny_model, stream):
    pack, hops, mel = stream
    got, _, _ = _runtime_chunks(pack, hops, mel)
    facts = pack.graph("hift").spec().facts
    f0 = graph_f0(pack.graph("hift").onnx_path, facts["samples_per_mel_frame"], facts["harmonics"])
    with pinned_f0(tiny_model.hift, f0):
        want = _upstream_chunks(tiny_model, pack, hops, mel)
    _check(got, want, PINNED_FLOAT_TOL, PINNED_PCM_TOL_LSB)


@pytest.mark.oracle
def test_push_is_pcm_of_the_float_audio_and_deterministic(stream):
    from runtime.vocoder import VocoderStage, pcm16

    pack, hops, mel = stream
    floats, _, _ = _runtime_chunks(pack, hops, mel)
    stage = VocoderStage.from_pack(pack, seed=SEED)
    start = 0
    for k, hop in enumerate(hops):
        pcm = stage.push(mel[:, :, start : start + 2 * hop], final=k == len(hops) - 1)
        assert pcm.dtype == np.dtype("<i2")
        np.testing.assert_array_equal(pcm, pcm16(floats[k][0]))  # same seed: bitwise the same run
        start += 2 * hop
    # after the final chunk the stage starts a new utterance: zero-length cache and noise from frame 0 again
    again = stage.push(mel[:, :, : 2 * hops[0]])
    np.testing.assert_array_equal(again, floats[0][1])


def test_bad_chunks_are_rejected(hift_pack):
    from runtime.vocoder import VocoderStage

    stage = VocoderStage.from_pack(Pack.open(hift_pack))
    with pytest.raises(ToolError, match="mel_cache_len"):
        stage.push(np.zeros((1, 80, 5), np.float32))  # non-final: the next call re-reads 8 frames
    with pytest.raises(ToolError, match="float32"):
        stage.push(np.zeros((1, 80, 50), np.float64))
    with pytest.raises(ToolError, match="float32"):
        stage.push(np.zeros((1, 81, 50), np.float32))
    assert stage.push(np.zeros((1, 80, 5), np.float32) - 5, final=True).shape == (5 * 480,)


def test_inconsistent_pack_constants_are_rejected(hift_pack, tmp_path):
    """The vocoder's constants come from the typed chunk policy, checked once when the pack is opened."""
    import json
    import shutil

    for change, message in (
        ({"source_cache_len": 4000}, "source_cache_len 4000 != mel_cache_len"),
        ({"crossfade": {"window": "hann", "length": 7680}}, "crossfade/window"),
    ):
        copy = tmp_path / f"pack-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(hift_pack, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["audio"]["chunk_policy"].update(change)
        write_manifest(copy / "manifest.json", manifest)
        with pytest.raises(ToolError, match=message):
            Pack.open(copy)


@pytest.mark.oracle
def test_crossfade_is_upstreams_fade_in_out_bit_for_bit(hift_pack):
    import torch
    from cosyvoice.utils.common import fade_in_out

    from runtime.vocoder import VocoderStage

    stage = VocoderStage.from_pack(Pack.open(hift_pack))
    rng = np.random.default_rng(0)
    new = (0.3 * rng.standard_normal(20000)).astype(np.float32)
    old = (0.3 * rng.standard_normal(3840)).astype(np.float32)
    kept = new.copy()
    want = fade_in_out(torch.from_numpy(new[None]), torch.from_numpy(old[None]), np.hamming(7680))[0].numpy()
    got = stage._fade_in(new, old)
    assert stage.overlap == 3840 and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(new, kept)  # the graph's output array is not modified in place
