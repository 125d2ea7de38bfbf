"""Upstream HiFT as the parity oracle, with its randomness made explicit.

`HiFTGenerator.inference` draws, in `SineGen2.forward`, a `torch.rand` initial phase per harmonic and a
`torch.randn_like` Gaussian noise of shape (1, samples, harmonics); `SourceModuleHnNSF.forward` draws a
second `randn_like` (1, samples, 1) for its noise branch, which the generator never uses. These context
managers replace those draws for the duration of one upstream call, so upstream runs with the exact noise
the graph is fed. Any other random call with an unexpected shape fails loudly instead of silently using the
global RNG.

`upstream_streaming_vocoder` drives upstream's own `CosyVoice2Model.token2wav` (mel cache, source cache,
`fade_in_out` cross-fade, `speech[:-source_cache_len]`) with a stand-in flow that returns a fixed mel, so
the streaming reference is upstream's code, not a re-implementation. `pinned_f0` + `graph_f0` replace
upstream's F0 predictor by the exported graph's own F0, to check everything after F0 to float32 rounding
(F0 is the one quantity whose last-bit differences the sine phase integrates and amplifies).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

# Streaming acceptance bounds (runtime/vocoder.py over the hift graph vs upstream token2wav), shared by
# tests/test_hift_streaming.py and ci/check_hift_full.py. As is, F0's last-bit differences (ORT vs oneDNN
# convs) are integrated by the sine phase: measured max 2.0e-4 (tiny) / 1.1e-4 (full) = 7 / 4 LSB on
# 200-frame calls. With F0 pinned to the graph's, everything else agrees to float32 rounding: measured 7e-7.
STREAM_FLOAT_TOL = 6e-4
STREAM_PCM_TOL_LSB = 20
PINNED_FLOAT_TOL = 5e-6
PINNED_PCM_TOL_LSB = 1


@dataclass
class RandomCalls:
    """What the patched random functions were asked for (to prove the patch was effective)."""

    sine_noise: int = 0
    branch_noise: int = 0
    initial_phase: int = 0
    shapes: list = field(default_factory=list)


@contextlib.contextmanager
def injected_noise(noise, phase=None):
    """Make upstream HiFT use `noise` (1, samples, harmonics) for SineGen2's sine noise and `phase` (1, harmonics)
    (default: zeros) for its random initial phase. The unused noise-branch draw returns zeros."""
    import torch

    noise = torch.as_tensor(noise, dtype=torch.float32)
    phase_t = torch.zeros(1, noise.shape[-1]) if phase is None else torch.as_tensor(phase, dtype=torch.float32)
    calls = RandomCalls()
    real_randn_like, real_rand = torch.randn_like, torch.rand

    def randn_like(t, *args, **kwargs):
        calls.shapes.append(("randn_like", tuple(t.shape)))
        if tuple(t.shape) == tuple(noise.shape):
            calls.sine_noise += 1
            return noise.clone().to(t.dtype)
        if tuple(t.shape) == tuple(noise.shape[:-1]) + (1,):
            calls.branch_noise += 1  # SourceModuleHnNSF's noise branch: computed, never used by HiFT
            return torch.zeros_like(t)
        raise AssertionError(f"unexpected randn_like{tuple(t.shape)} inside the HiFT oracle")

    def rand(*size, **kwargs):
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else tuple(size)
        calls.shapes.append(("rand", shape))
        if shape == tuple(phase_t.shape):
            calls.initial_phase += 1
            return phase_t.clone()
        raise AssertionError(f"unexpected rand{shape} inside the HiFT oracle")

    torch.randn_like, torch.rand = randn_like, rand
    try:
        yield calls
    finally:
        torch.randn_like, torch.rand = real_randn_like, real_rand


def upstream_hift(hift, mel: np.ndarray, cache_source: np.ndarray, noise: np.ndarray, phase=None):
    """`hift.inference(mel, cache_source)` with the given noise: returns (speech (1, S), source (1, 1, S))."""
    import torch

    with injected_noise(noise, phase) as calls:
        speech, source = hift.inference(
            speech_feat=torch.from_numpy(np.ascontiguousarray(mel)),
            cache_source=torch.from_numpy(np.ascontiguousarray(cache_source)),
        )
    if calls.sine_noise != 1:
        raise AssertionError(f"upstream HiFT drew sine noise {calls.sine_noise} times (expected once): {calls.shapes}")
    return speech.numpy().copy(), source.numpy().copy()


class _FixedMelFlow:
    """Stand-in for the flow inside `CosyVoice2Model.token2wav`: returns frames of a fixed mel.

    token2wav asks for all tokens so far (+ pre_lookahead_len when not final) and keeps
    `mel[:, :, token_offset * token_mel_ratio:]`; the flow's non-final output excludes the lookahead."""

    def __init__(self, mel, token_mel_ratio: int, pre_lookahead_len: int):
        self.mel, self.token_mel_ratio, self.pre_lookahead_len = mel, token_mel_ratio, pre_lookahead_len

    def inference(self, token, finalize, **_):
        n = token.shape[1] - (0 if finalize else self.pre_lookahead_len)
        return self.mel[:, :, : n * self.token_mel_ratio], None


def token2wav_without_prompt(up, n_tokens: int, token_offset: int, uuid: str, final: bool):
    """One upstream `token2wav` call of a streaming loop (CosyVoice2Model / CosyVoice3Model) for `n_tokens`
    placeholder tokens without a prompt (the oracles' flow stand-ins ignore the tokens): the speech it returns."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.cuda.amp.autocast deprecation inside token2wav
        return up.token2wav(
            token=torch.zeros(1, n_tokens, dtype=torch.int32),
            prompt_token=torch.zeros(1, 0, dtype=torch.int32),
            prompt_feat=torch.zeros(1, 0, 80),
            embedding=torch.zeros(1, 192),
            token_offset=token_offset,
            uuid=uuid,
            stream=not final,
            finalize=final,
        )


def upstream_streaming_vocoder(
    hift, mel: np.ndarray, hops: list[int], noise_for, token_mel_ratio: int = 2, pre_lookahead_len: int = 3
) -> list[np.ndarray]:
    """Run upstream `CosyVoice2Model.token2wav` over `mel` in token hops (the last hop is the final call).

    `noise_for(first_frame, n_frames)` returns the noise (1, n_frames * upsample, harmonics) for the HiFT
    call whose mel input covers absolute frames [first_frame, first_frame + n_frames) (cache included).
    Returns the float speech of each call, as token2wav returns it."""
    import torch
    from cosyvoice.cli.model import CosyVoice2Model

    mel_t = torch.from_numpy(np.ascontiguousarray(mel))
    up = CosyVoice2Model(None, _FixedMelFlow(mel_t, token_mel_ratio, pre_lookahead_len), hift)
    uuid = "oracle"
    up.hift_cache_dict[uuid] = None
    out, token_offset, cached = [], 0, 0
    for k, hop in enumerate(hops):
        final = k == len(hops) - 1
        n_tokens = token_offset + hop + (0 if final else pre_lookahead_len)
        new_frames = hop * token_mel_ratio
        first = token_offset * token_mel_ratio - cached
        with injected_noise(noise_for(first, cached + new_frames)) as calls:
            speech = token2wav_without_prompt(up, n_tokens, token_offset, uuid, final)
        if calls.sine_noise != 1:
            raise AssertionError(f"token2wav call {k} drew sine noise {calls.sine_noise} times: {calls.shapes}")
        out.append(speech.numpy().copy())
        token_offset += hop
        cached = up.mel_cache_len
    return out


def graph_f0(onnx_path, samples_per_frame: int, harmonics: int):
    """mel -> the F0 the exported graph computes (the f0 predictor's final Abs, exposed as an extra output
    of a copy of the graph). Used to pin upstream's F0 to the graph's, isolating everything after F0."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(onnx_path))
    found = [n for n in proto.graph.node if n.op_type == "Abs" and "f0_predictor" in n.name]
    if len(found) != 1:
        raise RuntimeError(f"expected one f0_predictor Abs node in {onnx_path}, found {[n.name for n in found]}")
    name = found[0].output[0]
    proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])

    def f0(mel: np.ndarray) -> np.ndarray:
        noise = np.zeros((1, samples_per_frame * mel.shape[2], harmonics), np.float32)
        return sess.run([name], {"mel": mel, "cache_source": np.zeros((1, 1, 0), np.float32), "noise": noise})[0]

    return f0


@contextlib.contextmanager
def pinned_f0(hift, f0_of_mel):
    """Upstream HiFT with its F0 predictor replaced by `f0_of_mel` (numpy mel -> numpy F0)."""
    import torch

    class Pinned(torch.nn.Module):
        def forward(self, mel):
            return torch.from_numpy(f0_of_mel(mel.numpy()))

    saved = hift.f0_predictor
    hift.f0_predictor = Pinned()
    try:
        yield
    finally:
        hift.f0_predictor = saved


@contextlib.contextmanager
def hift_noise(hift, noise_source, mel_cache_len: int):
    """Each upstream `hift.inference` call (as CosyVoice2Model.token2wav makes them: the first without, later ones
    with `mel_cache_len` cached frames in front) gets `noise_source(first_frame, frames)`, the noise the
    runtime's vocoder uses for the same absolute mel frames."""
    original = hift.inference
    state = {"next": 0, "calls": 0}

    def inference(speech_feat, cache_source):
        cached = 0 if state["calls"] == 0 else mel_cache_len
        first = state["next"] - cached
        frames = speech_feat.shape[2]
        with injected_noise(noise_source(first, frames)):
            out = original(speech_feat=speech_feat, cache_source=cache_source)
        state["next"] += frames - cached
        state["calls"] += 1
        return out

    hift.inference = inference
    try:
        yield state
    finally:
        del hift.inference  # back to the class method
