"""`hift`: the CosyVoice 1 HiFT vocoder (mel -> 22 050 Hz waveform) for streaming, with an explicit source cache.

The CosyVoice2 `hift` graph (exporters/graphs/hift.py) with v1's sizes (ups [8, 8]: 256 samples per mel frame)
and v1's sine source, `SineGen` "type 1": its random initial phase is added to every sample's phase (SineGen2's
only touches a sample nobody reads), so it is an input, `phase`, beside the noise. Upstream draws both afresh
on every `hift.inference` call; the runtime draws them deterministically (runtime/vocoder.py). Export-only
rewrites: `NoisePhaseDrivenSource` (exporters/rewrites/hift_source.py) for SineGen, the conv STFT/ISTFT patch;
everything else is the upstream module with weight norm folded. One graph serves every call of upstream's
`CosyVoiceModel.token2wav`: the first with a zero-length `cache_source`.
"""

from __future__ import annotations

import contextlib

import numpy as np

from exporters.graphs.base import Case
from exporters.graphs.hift import (
    HIFT_ATOL,
    HIFT_DRIFT,
    HiftExporter,
    fold_weight_norm,
    hift_sizes,
    hift_stream_cases,
    hift_stream_profiles,
    hift_stream_spec,
)
from exporters.model.facts import chunk_policy
from specs.chunk_policy import ChunkPolicy
from specs.io_spec import DimRange, GraphSpec, ProfileSpec, TensorSpec, Tolerance
from specs.noise import phase_from_uniforms

MAX_SECONDS = 60  # the longest offline call, as CosyVoice2's hift (3000 frames at 50 Hz)
FINAL_NEW_FRAMES = 37  # an odd final remainder for the test cases


def v1_hift_sizes(model) -> dict:
    """hift_sizes plus the declared maximum frames, for upstream's v1 HiFTGenerator (SineGen source)."""
    gen = model.hift.m_source.l_sin_gen
    if type(gen).__name__ != "SineGen":
        raise NotImplementedError(f"the v1 hift exporter needs SineGen (22 050 Hz HiFT), got {type(gen).__name__}")
    s = hift_sizes(model)
    return {**s, "max_frames": MAX_SECONDS * s["sample_rate"] // s["samples_per_mel_frame"]}


def window_new_frames(policy: ChunkPolicy, hop: int) -> int:
    """New mel frames a non-final v1 call hands HiFT: the window's frames (hop + overlap tokens) minus the
    mel_overlap_len tail kept back for the next window's mel fade (upstream CosyVoiceModel.token2wav)."""
    return policy.mel(hop + policy.token_overlap_len) - policy.mel_overlap_len


def case_chunk_frames(policy: ChunkPolicy) -> tuple[int, int, int]:
    """New mel frames of the three test calls: upstream's first window, its second (hop x stream_scale_factor,
    at most token_max_hop_len), and an odd final remainder."""
    second = min(policy.token_max_hop_len, policy.token_hop_len * policy.stream_scale_factor)
    return window_new_frames(policy, policy.token_hop_len), window_new_frames(policy, second), FINAL_NEW_FRAMES


@contextlib.contextmanager
def injected_sinegen(noise: np.ndarray, u: np.ndarray):
    """Upstream v1 HiFT with its draws pinned for one call: SineGen's `Uniform(-pi, pi).sample((1, H, 1))`
    (torch.rand inside) gets `u` (1, H), its `randn_like` of (1, H, samples) gets `noise` (1, samples, H)
    transposed; SourceModuleHnNSF's unused noise-branch `randn_like` (1, samples, 1) gets zeros. Any other
    draw fails. Yields the count of pinned draws (each must be 1)."""
    import torch

    noise_t = torch.from_numpy(np.ascontiguousarray(noise)).transpose(1, 2).contiguous()
    u_t = torch.from_numpy(np.asarray(u, np.float32).reshape(1, -1, 1).copy())
    calls = {"rand": 0, "randn_like": 0}
    real_rand, real_randn_like = torch.rand, torch.randn_like

    def rand(*size, **kwargs):
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        if tuple(shape) != tuple(u_t.shape):
            raise AssertionError(f"unexpected rand{tuple(shape)} inside the v1 HiFT oracle")
        calls["rand"] += 1
        return u_t.clone()

    def randn_like(t, *args, **kwargs):
        if tuple(t.shape) == tuple(noise_t.shape):
            calls["randn_like"] += 1
            return noise_t.clone()
        if tuple(t.shape) == (1, noise_t.shape[2], 1):  # the noise branch: computed, never used by HiFT
            return torch.zeros_like(t)
        raise AssertionError(f"unexpected randn_like{tuple(t.shape)} inside the v1 HiFT oracle")

    torch.rand, torch.randn_like = rand, randn_like
    try:
        yield calls
    finally:
        torch.rand, torch.randn_like = real_rand, real_randn_like


def upstream_hift_v1(hift, mel: np.ndarray, cache_source: np.ndarray, noise: np.ndarray, u: np.ndarray):
    """Upstream `hift.inference(mel, cache_source)` with the given noise and initial-phase uniforms:
    (speech (1, S), source (1, 1, S))."""
    import torch

    with injected_sinegen(noise, u) as calls:
        speech, source = hift.inference(
            speech_feat=torch.from_numpy(np.ascontiguousarray(mel)),
            cache_source=torch.from_numpy(np.ascontiguousarray(cache_source)),
        )
    if calls != {"rand": 1, "randn_like": 1}:
        raise AssertionError(f"upstream v1 HiFT drew {calls} (expected one phase and one noise draw)")
    return speech.numpy().copy(), source.numpy().copy()


def upstream_v1_flow_mel(flow, seed: int, n_tokens: int):
    """A mel the vocoder will really see: upstream MaskedDiffWithXvec.inference on random tokens without a
    prompt (its ODE noise from the global RNG, seeded here and restored after)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, flow.vocab_size, (1, n_tokens), generator=gen, dtype=torch.int32)
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        mel, _ = flow.inference(
            token=tokens,
            token_len=torch.tensor([n_tokens], dtype=torch.int32),
            prompt_token=torch.zeros(1, 0, dtype=torch.int32),
            prompt_token_len=torch.tensor([0], dtype=torch.int32),
            prompt_feat=torch.zeros(1, 0, flow.output_size),
            prompt_feat_len=torch.tensor([0], dtype=torch.int32),
            embedding=torch.randn(1, flow.spk_embed_affine_layer.in_features, generator=gen),
            flow_cache=torch.zeros(1, flow.output_size, 0, 2),
        )
    return mel


def v1_hift_tolerances() -> dict[str, Tolerance]:
    """CosyVoice2's hift bound (exporters/graphs/hift.py hift_tolerances: atol 1e-5 + `phase_drift` of 64
    float32 ulps of F0), with v1's reasons. Measured: tests/test_v1_hift.py."""
    drift = (
        f"drift {HIFT_DRIFT:.2g} = 64 float32 ulps (2^-24) of relative F0 error, as CosyVoice2's hift: ORT's and "
        "oneDNN's float32 convs round the F0 predictor differently by a few ulps, and the source sums F0 into a "
        "phase over the call, so a relative F0 error eps delays every harmonic by eps * n samples. v1 sums per "
        "sample and rounds the running sum to float32 (upstream's precision, reproduced: the graph rounds where "
        "torch's double-accumulated cumsum rounds); a 1-ulp difference of that sum is a relative 2^-24, inside "
        "the same budget. Measured (tests/test_v1_hift.py, tiny v1 bundle): upstream init (unvoiced, F0 < 1 Hz): "
        "max |err| 2.8e-7 audio / 8.9e-8 source (float32 rounding); F0 classifier rescaled to voiced 72..262 Hz: "
        "F0 relative error <= 9 ulps, max |err| 6.1e-5 audio / 6.9e-5 source at bound use <= 0.03 / 0.09; with "
        "upstream's F0 pinned to the graph's, <= 1.1e-6 over a whole stream. Planted bugs fail the voiced gate: "
        "a float32 per-sample CumSum (bound use >= 19 on source), the initial phase dropped (>= 1195), the "
        "source one sample late (>= 49)"
    )
    reasons = {
        "audio": "set by F0, not by the vocoder: atol 1e-5 at the call's first sample (unvoiced, the graph equals "
        "upstream within 2.8e-7: float32 rounding of convs and ISTFT on audio <= 0.99; x35). ",
        "source": "tanh(linear(0.1 * sin(phase_h + initial phase_h) * uv + noise)) with noise and initial phase "
        "pinned (inputs): the F0-driven phase drift and nothing else; the cached prefix is a copy of "
        "cache_source (exact). atol 1e-5 as for audio. ",
    }
    return {
        out: Tolerance(atol=HIFT_ATOL, rtol=0.0, check="phase_drift", drift=HIFT_DRIFT, reason=why + drift)
        for out, why in reasons.items()
    }


class HiftV1Exporter(HiftExporter):
    """`hift` for upstream v1 `HiFTGenerator.inference`: CosyVoice2's graph, v1 sizes and source, `phase` in.
    Inherits the fp16 policy (TensorRT only, source path fp32) and the conv STFT/ISTFT patch."""

    def spec(self, model) -> GraphSpec:
        s, policy = v1_hift_sizes(model), chunk_policy(model)
        h = s["harmonics"]
        phase = TensorSpec(
            "phase",
            "float32",
            [1, h],
            f"initial phase of each of the {h} harmonics in [-pi, pi), harmonic 0 = 0 (upstream: a fresh "
            "Uniform(-pi, pi) draw inside SineGen.forward on every call, the fundamental's zeroed; the graph "
            "zeroes harmonic 0 too)",
        )
        return hift_stream_spec(
            self.name,
            s,
            policy,
            case_chunk_frames(policy),
            family="CosyVoice 1 (upstream HiFTGenerator.inference, SineGen source)",
            drawn_inputs="noise and initial phase as inputs",
            mel_rate=f"{s['sample_rate'] / s['samples_per_mel_frame']:.2f}",
            sine_gen="SineGen",
            max_frames=s["max_frames"],
            extra_inputs=[phase],
            tolerances=v1_hift_tolerances(),
            initial_phase={
                "input": "phase",
                "distribution": "uniform",
                "low": -float(np.pi),
                "high": float(np.pi),
                "harmonic_0": 0.0,
                "dtype": "float32",
                "shape": ["harmonics"],
                "per": "call",
                "doc": "drawn afresh for every call, as upstream SineGen does (float32 low + u * (high - low), u in "
                "[0, 1)); it shifts every sample's phase of harmonic h, so unlike CosyVoice2's it changes the audio. "
                "The pack's runtime draws it from (seed, call index) (runtime/vocoder.py)",
            },
        )

    def profiles(self, spec: GraphSpec, p: ChunkPolicy) -> dict[str, list[ProfileSpec]]:
        """Offline: one call on the whole mel, no cache. Stream (upstream's windows): the first call (zero-length
        cache; its first window, or a final-only call) and every later call (cached mel + source)."""
        first_new, steady_new, _ = case_chunk_frames(p)
        final_lo, final_hi = p.final_after_chunks_tokens
        max_new = max(window_new_frames(p, p.token_max_hop_len), p.mel(final_hi))
        first = DimRange(
            p.mel(1),
            first_new,
            max(first_new, p.mel(p.final_only_max_tokens)),
            f"first window's {first_new} frames (hop + overlap - mel overlap), or a final-only call of "
            f"1..{p.final_only_max_tokens} tokens",
        )
        later = DimRange(
            p.mel_cache_len + p.mel(final_lo),
            p.mel_cache_len + steady_new,
            p.mel_cache_len + max_new,
            f"{p.mel_cache_len} cached frames + a window's new frames ({steady_new} steady, up to {max_new}), "
            f"or a final call's {final_lo}..{final_hi} tokens",
        )
        return hift_stream_profiles(spec, p, first, later)

    def wrapper(self, model):
        import torch

        from exporters.rewrites.hift_source import NoisePhaseDrivenSource

        s = v1_hift_sizes(model)

        class HiftV1Wrapper(torch.nn.Module):
            """Upstream `HiFTGenerator.inference` with noise and initial phase as inputs and a branch-free cache
            overwrite."""

            def __init__(self, hift):
                super().__init__()
                self.hift = hift
                self.source = NoisePhaseDrivenSource(hift.m_source, s["samples_per_mel_frame"], s["max_frames"])

            def forward(self, mel, cache_source, noise, phase):
                f0 = self.hift.f0_predictor(mel)  # (1, frames)
                src = self.source(f0, noise, phase)  # (1, 1, samples)
                # upstream: s[:, :, :len(cache)] = cache if len(cache) else s; the same for length 0
                src = torch.cat([cache_source, src[:, :, cache_source.shape[2] :]], dim=2)
                return self.hift.decode(x=mel, s=src), src

        return HiftV1Wrapper(fold_weight_norm(model.hift)).eval()

    def cases(self, model, seed: int) -> dict[str, Case]:
        s, policy = v1_hift_sizes(model), chunk_policy(model)
        frames = case_chunk_frames(policy)
        total = sum(frames)
        n_tokens = policy.tokens(total * s["samples_per_mel_frame"] / s["sample_rate"]) + 1
        mel = upstream_v1_flow_mel(model.flow, seed, n_tokens).numpy().astype(np.float32)
        assert mel.shape[2] >= total, (mel.shape, total)
        oracle = lambda mel, cache, noise, u: upstream_hift_v1(model.hift, mel, cache, noise, u)  # noqa: E731
        return hift_stream_cases(mel, frames, s, policy, seed, oracle, phase=phase_from_uniforms)
