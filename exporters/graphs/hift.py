"""`hift`: the CosyVoice2 HiFT vocoder (mel -> 24 kHz waveform) for streaming, with an explicit source cache.

One graph serves every call of upstream's `CosyVoice2Model.token2wav`: the runtime prepends the cached
mel frames itself and passes the cached source samples as `cache_source`; the first chunk passes a
zero-length `cache_source` through the same graph (the overwrite is a concat + slice, no branch). The
sine-source noise is an input (upstream draws it with `randn_like` on every call) and the random initial
phase is dropped (it has no effect on the output; see exporters/rewrites/hift_source.py). Export-only rewrites:
`NoiseDrivenSource` (SineGen2 with noise in) in the wrapper and the conv STFT/ISTFT patch on
`HiFTGenerator._stft/_istft`; everything else is the upstream module with weight norm folded.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np

from exporters.graphs.base import NORM_SOFTMAX, Case, GraphExporter, typical_prompt_tokens, typical_utterance_tokens
from exporters.model.facts import chunk_policy
from specs.chunk_policy import ChunkPolicy
from specs.io_spec import CachePair, Dim, DimRange, GraphSpec, ProfileSpec, TensorSpec, TestCase, Tolerance
from specs.precision import Fp32Keep, PrecisionPolicy

MAX_FRAMES = 3000  # 60 s of mel at 50 Hz: an offline (non-streaming) call on a whole utterance


def hift_sizes(model) -> dict:
    """Every size the graph and the runtime need, read from the upstream module."""
    hift = model.hift
    gen = hift.m_source.l_sin_gen
    return {
        "sample_rate": int(hift.sampling_rate),
        "mel_bins": int(hift.conv_pre.in_channels),
        "samples_per_mel_frame": int(hift.f0_upsamp.scale_factor),
        "harmonics": int(gen.harmonic_num) + 1,
        "istft_n_fft": int(hift.istft_params["n_fft"]),
        "istft_hop": int(hift.istft_params["hop_len"]),
        "audio_limit": float(hift.audio_limit),
    }


def case_chunk_frames(policy: ChunkPolicy) -> tuple[int, int, int]:
    """New mel frames of the three test calls: upstream's first hop (25 tokens -> 50 frames), its second
    (x stream_scale_factor -> 100), and an odd final remainder (37)."""
    first = policy.mel(policy.token_hop_len)
    return first, first * policy.stream_scale_factor, 37


def fold_weight_norm(module):
    """A deep copy of `module` with every weight-norm parametrization folded into a plain weight.

    `remove_parametrizations` deletes the parametrized property from the module's class, and `deepcopy`
    shares that dynamically made class (`ParametrizedConv1d`, ...) with the original: removing on a plain
    copy breaks the shared model (`'ParametrizedConv1d' object has no attribute 'weight'`). Each copied
    module therefore gets its own clone of the class first."""
    import torch.nn.utils.parametrize as parametrize

    module = copy.deepcopy(module)
    for m in module.modules():
        if parametrize.is_parametrized(m):
            cls = type(m)
            m.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
            for name in list(m.parametrizations.keys()):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return module.eval()


@contextlib.contextmanager
def conv_stft_patch():
    """Swap `HiFTGenerator._stft/_istft` (torch.stft / torch.istft) for the fixed-basis conv versions."""
    import torch
    from cosyvoice.hifigan.generator import HiFTGenerator

    from exporters.rewrites.istft import ConvISTFT, ConvSTFT

    def _stft(self, x):
        p = self.istft_params
        return ConvSTFT(p["n_fft"], p["hop_len"], self.stft_window)(x)

    def _istft(self, magnitude, phase):  # upstream's clip + polar form, then the conv ISTFT
        p = self.istft_params
        magnitude = torch.clip(magnitude, max=1e2)
        real, imag = magnitude * torch.cos(phase), magnitude * torch.sin(phase)
        return ConvISTFT(p["n_fft"], p["hop_len"], self.stft_window)(real, imag)

    saved = HiFTGenerator._stft, HiFTGenerator._istft
    HiFTGenerator._stft, HiFTGenerator._istft = _stft, _istft
    try:
        yield
    finally:
        HiFTGenerator._stft, HiFTGenerator._istft = saved


# The hift gate (ONNX Runtime vs upstream PyTorch, fp32). Everything but F0 is deterministic to float32 rounding;
# F0 is not: ORT's and oneDNN's convs round the F0 predictor differently by a few ulps, and the sine source
# integrates F0 into a phase, so the difference grows along each call (`phase_drift`, specs/compare.py).
F0_REL_ULPS = 64  # the drift budget in float32 ulps (2^-24) of F0; see hift_tolerances
HIFT_DRIFT = F0_REL_ULPS * 2.0**-24  # 3.8e-6: relative error of the integrated frequency
HIFT_ATOL = 1e-5  # the floor at each call's first sample


def hift_tolerances() -> dict[str, Tolerance]:
    """`audio` and `source` under `phase_drift`: |err[n]| <= 1e-5 + 3.8e-6 * n * slope(n) (n = sample of the call,
    slope = the reference's largest one-sample step within 4 samples). Numbers: ci/sweep_hift_gate.py."""
    drift = (
        f"drift {HIFT_DRIFT:.2g} = {F0_REL_ULPS} float32 ulps (2^-24) of relative F0 error: the phase of harmonic h "
        "at sample n is 2*pi*h*sum(f0)/sr, so a relative F0 error eps delays every harmonic alike, by eps*n samples "
        "(eps*n*f0_mean/f0_now where F0 varies within the call). Measured (ci/sweep_hift_gate.py: 30 tiny + 3 "
        "medium bundles of upstream's own init, each as is (unvoiced) and with a voiced F0 of 80..400 Hz and "
        "peaks 0.4..0.95): F0 relative error ORT vs upstream <= 21.5 ulps (64 = 3x that, for wider F0 "
        "predictors), largest bound use 0.42 (source, F0 falling within the call), zero refusals; the old flat "
        "atol 3e-4 refused such bundles (max |err| up to 4.8e-4). The bound is atol at each call's first sample "
        "and grows only as fast as F0 can drift (0.2 samples of delay at the end of the 108-frame steady case), "
        "so planted bugs (one Snake alpha x1.5, the source one sample late, a symmetric ISTFT window) still "
        "fail with bound use >= 19"
    )
    return {
        "audio": Tolerance(
            atol=HIFT_ATOL,
            rtol=0.0,
            check="phase_drift",
            drift=HIFT_DRIFT,
            reason="set by F0, not by the vocoder. atol 1e-5 at the call's start: with F0 pinned to the graph's, "
            "the graph equals upstream within 1e-6 (tests/test_hift_streaming.py; float32 rounding of convs "
            f"and ISTFT on audio <= 0.99, ulp 6e-8), x10. {drift}",
        ),
        "source": Tolerance(
            atol=HIFT_ATOL,
            rtol=0.0,
            check="phase_drift",
            drift=HIFT_DRIFT,
            reason="the source is tanh(linear(0.1 * sin(phase_h) * uv + noise)) with the noise pinned (an input): "
            "the same F0-driven phase drift as audio, and nothing else (unvoiced or F0-pinned: <= 6e-8, 1 ulp "
            "of tanh near 1); the cached prefix is a copy of cache_source (exact: error 0 there, "
            f"tests/test_hift_gate.py). atol 1e-5 as for audio. {drift}",
        ),
    }


def hift_stream_spec(
    name: str,
    s: dict,
    policy: ChunkPolicy,
    frames: tuple[int, int, int],
    *,
    family: str,
    drawn_inputs: str,
    mel_rate: str,
    sine_gen: str,
    max_frames: int,
    extra_inputs: list[TensorSpec],
    tolerances: dict[str, Tolerance],
    initial_phase,
) -> GraphSpec:
    """The spec of a streaming HiFT graph with an explicit source cache (CosyVoice2's and CosyVoice 1's): mel,
    cache_source, the sine noise (+ `extra_inputs`) in; audio and source out. `frames`: the new mel frames of
    the first, steady and final test calls; `initial_phase`: the facts' entry on SineGen's random phase."""
    spm, h = s["samples_per_mel_frame"], s["harmonics"]
    mel_cache, src_cache = policy.mel_cache_len, policy.source_cache_len
    first, steady_new, final_new = frames
    steady = steady_new + mel_cache  # a second streaming call: the TensorRT "opt" size
    t = lambda n, shape, d: TensorSpec(n, "float32", shape, d)  # noqa: E731
    return GraphSpec(
        graph=name,
        description=f"HiFT vocoder of {family}: mel -> F0 -> harmonic source ({drawn_inputs}) -> waveform, with "
        f"upstream's streaming source cache. Streaming calls: mel = the previous call's last {mel_cache} mel "
        f"frames + the new frames, cache_source = the previous call's source[..., -{src_cache}:]; the first call "
        "passes a zero-length cache_source. The runtime cross-fades and holds back the tail (runtime/vocoder.py).",
        inputs=[
            t(
                "mel",
                [1, s["mel_bins"], "frames"],
                f"{s['mel_bins']}-bin log-mel at {mel_rate} Hz; in streaming, the {mel_cache} cached frames of the "
                "previous call come first",
            ),
            t(
                "cache_source",
                [1, 1, "cache_samples"],
                f"source samples of the previous call (source[..., -{src_cache}:]) that overwrite the start of this "
                "call's source; length 0 on the first call; cache_samples <= samples",
            ),
            t(
                "noise",
                [1, "samples", h],
                f"i.i.d. standard-normal noise for the {h} harmonics of the sine source, one row per output sample "
                f"(upstream: randn_like inside {sine_gen}.forward)",
            ),
            *extra_inputs,
        ],
        outputs=[
            t(
                "audio",
                [1, "samples"],
                f"waveform at {s['sample_rate']} Hz, clamped to [-{s['audio_limit']}, {s['audio_limit']}] (before "
                "cross-fade)",
            ),
            t(
                "source",
                [1, 1, "samples"],
                f"the harmonic source after the cache overwrite; the runtime keeps its last {src_cache} samples as "
                "the next cache_source",
            ),
        ],
        dims={
            "frames": Dim(1, steady, max_frames, "mel frames of this call, cached frames included", role="frames"),
            "cache_samples": Dim(0, src_cache, src_cache, f"0 on the first call, then {src_cache}", role="cache"),
            "samples": Dim(
                spm,
                spm * steady,
                spm * max_frames,
                f"output samples = {spm} * frames",
                role="samples",
                derived_from={"dim": "frames", "scale": spm, "offset": 0},
            ),
        },
        tolerances=tolerances,
        cases=[
            TestCase("first_chunk", f"first streaming call: {first} frames, zero-length cache_source"),
            TestCase(
                "steady_chunk",
                f"second call: {mel_cache} cached + {steady_new} new frames, cache_source = the first call's last "
                f"{src_cache} source samples",
            ),
            TestCase(
                "final_chunk",
                f"final call: {mel_cache} cached + {final_new} new frames (odd), cache_source from the steady call",
            ),
        ],
        caches=[
            CachePair(
                "cache_source",
                "source",
                f"next cache_source = source[..., -{src_cache}:]; the mel input of the next call starts with this "
                f"call's last {mel_cache} mel frames",
                first_call="zero-length",
            )
        ],
        facts={
            **s,
            "mel_cache_len": mel_cache,
            "source_cache_len": src_cache,
            "noise": {
                "input": "noise",
                "distribution": "standard_normal",
                "dtype": "float32",
                "shape": ["samples", "harmonics"],
                "doc": "i.i.d. N(0, 1); any generator. Upstream draws it per call; the pack's runtime draws it per "
                "absolute mel frame (specs/noise.py) so chunked and whole-utterance runs use identical noise",
            },
            "initial_phase": initial_phase,
            "cache_rule": f"call k > 0: mel = concat(mel_prev[..., -{mel_cache}:], new mel), cache_source = "
            f"source_prev[..., -{src_cache}:]; call 0: cache_source has length 0",
        },
    )


def hift_stream_profiles(
    spec: GraphSpec, p: ChunkPolicy, first: DimRange, later: DimRange
) -> dict[str, list[ProfileSpec]]:
    """Offline: one call on the whole mel, no cache. Stream: the first call (zero-length cache, `first` frames)
    and every later call (cached mel + source, `later` frames)."""
    (frames,), (cache,) = spec.dims_with_role("frames"), spec.dims_with_role("cache")
    no_cache = DimRange.pinned(0, "no source cache before the first call (zero-length input)")
    later_cache = DimRange(
        1, p.source_cache_len, p.source_cache_len, f"the previous call's last {p.source_cache_len} source samples"
    )
    utterance = DimRange(
        p.mel(1),
        p.mel(typical_utterance_tokens(p)),
        spec.dims[frames].max,
        "one call on the whole utterance's mel (no cache)",
    )
    return {
        "stream": [
            ProfileSpec(
                "first_chunk", "first call of a stream (or its only, final, call)", {cache: no_cache, frames: first}
            ),
            ProfileSpec(
                "later_chunks",
                "every call after the first: cached mel + source",
                {cache: later_cache, frames: later},
            ),
        ],
        "offline": [
            ProfileSpec(
                "utterance", "offline: one call, zero-length cache_source", {cache: no_cache, frames: utterance}
            )
        ],
    }


def hift_stream_cases(
    mel: np.ndarray, frames: tuple[int, int, int], s: dict, policy: ChunkPolicy, seed: int, oracle, phase=None
) -> dict[str, Case]:
    """The three streaming test calls over `mel` (new frames `frames`: first, steady, final), each after the
    previous one's mel and source caches: random noise and initial-phase uniforms u (1, harmonics), then
    `oracle(mel, cache_source, noise, u)` -> (audio, source); `phase(u)`, when given, is fed as input `phase`."""
    spm, h = s["samples_per_mel_frame"], s["harmonics"]
    rng = np.random.default_rng(seed)
    out: dict[str, Case] = {}
    start, cache = 0, np.zeros((1, 1, 0), np.float32)
    for case, new in zip(("first_chunk", "steady_chunk", "final_chunk"), frames):
        lo = start - (policy.mel_cache_len if start else 0)
        chunk = np.ascontiguousarray(mel[:, :, lo : start + new])
        # Gaussian noise on a 1/32 grid: still N(0, 1)-like for the test, but its float32 values have
        # short mantissas, so the committed golden vectors compress ~3x (the noise is most of the bytes).
        noise = np.round(rng.standard_normal((1, chunk.shape[2] * spm, h)) * 32).astype(np.float32) / 32
        u = rng.random((1, h), dtype=np.float32)
        speech, source = oracle(chunk, cache, noise, u)
        feed = {"mel": chunk, "cache_source": cache, "noise": noise}
        if phase is not None:
            feed["phase"] = phase(u)
        out[case] = (feed, {"audio": speech, "source": source})
        start += new
        cache = np.ascontiguousarray(source[:, :, -policy.source_cache_len :])
    return out


class HiftExporter(GraphExporter):
    name = "hift"
    opset = 18
    trace_case = "steady_chunk"

    def spec(self, model) -> GraphSpec:
        s, policy = hift_sizes(model), chunk_policy(model)
        return hift_stream_spec(
            self.name,
            s,
            policy,
            case_chunk_frames(policy),
            family="CosyVoice2 (upstream HiFTGenerator.inference)",
            drawn_inputs="noise as an input",
            mel_rate="50",
            sine_gen="SineGen2",
            max_frames=MAX_FRAMES,
            extra_inputs=[],
            tolerances=hift_tolerances(),
            initial_phase="dropped: upstream's random SineGen2 initial phase only changes samples the "
            "1/samples_per_mel_frame linear downsample never reads",
        )

    def profiles(self, spec: GraphSpec, p: ChunkPolicy) -> dict[str, list[ProfileSpec]]:
        """Offline: one call on the whole mel, no cache. Stream: the first call (zero-length cache, frames of
        the first hop or a final-only call) and every later call (cached mel + source)."""
        first = DimRange(
            p.mel(1),
            p.mel(p.token_hop_len + p.prompt_pad(typical_prompt_tokens(p))),
            p.mel(p.final_only_max_tokens),
            f"first call: {p.token_mel_ratio} x (hop + prompt pad) "
            f"frames, or a final-only call of 1..{p.final_only_max_tokens} tokens",
        )
        lo_new, hi_new = p.final_after_chunks_tokens
        later = DimRange(
            p.mel_cache_len + p.mel(lo_new),
            p.mel_cache_len + p.mel(p.token_max_hop_len),
            p.mel_cache_len + p.mel(hi_new),
            f"{p.mel_cache_len} cached frames + {p.token_mel_ratio} x new tokens ({lo_new}..{hi_new} on "
            f"the final call, {p.token_max_hop_len} steady)",
        )
        return hift_stream_profiles(spec, p, first, later)

    def variants(self, spec: GraphSpec) -> dict[str, PrecisionPolicy]:
        """fp16 for TensorRT only (source path and magnitude path fp32); no ONNX Runtime fp16 variant: see the
        note at the end of this module."""
        keep = Fp32Keep(
            ops=NORM_SOFTMAX + ("Exp", "Sin", "Cos", "CumSum", "Div", "Atan", "Log"),
            name_patterns=(r"^/source/", r"f0_predictor", r"m_source"),
            paths=(("Exp", "audio"),),
            reason="the harmonic source integrates phase (cumsum of f0/sr over a whole call: thousands of radians, "
            "fp16 spacing ~1 rad) and the f0 that drives it; the magnitude path exp -> clip -> polar -> "
            "ISTFT -> window-envelope division -> audio needs fp32 range and precision",
        )
        tol = {
            "audio": Tolerance(
                atol=2e-2,
                rtol=0.0,
                reason="fp16 convs with fp32 source and magnitude path; "
                "audio in [-0.99, 0.99]: 2e-2 is -34 dBFS, still far below a broken engine. "
                "Initial budget, not yet measured on TensorRT",
            ),
            "source": Tolerance(
                atol=1e-2,
                rtol=0.0,
                reason="source computed in fp32 (kept nodes); fp16 only in "
                "the f0 predictor's inputs. Initial budget, not yet measured on TensorRT",
            ),
        }
        return {
            "fp16": PrecisionPolicy(
                "fp16",
                "float16",
                tol,
                ("tensorrt",),
                keep,
                doc="TensorRT fp16 plans only (tts-build-trt --precision fp16)",
            )
        }

    def wrapper(self, model):
        import torch

        from exporters.rewrites.hift_source import NoiseDrivenSource

        class HiftWrapper(torch.nn.Module):
            """Upstream `HiFTGenerator.inference` with the noise as an input and a branch-free cache overwrite."""

            def __init__(self, hift):
                super().__init__()
                self.hift = hift
                self.source = NoiseDrivenSource(hift.m_source, int(hift.f0_upsamp.scale_factor))

            def forward(self, mel, cache_source, noise):
                f0 = self.hift.f0_predictor(mel)  # (1, frames)
                s = self.source(f0, noise)  # (1, 1, samples)
                # upstream: s[:, :, :len(cache)] = cache if len(cache) else s; the same for length 0
                s = torch.cat([cache_source, s[:, :, cache_source.shape[2] :]], dim=2)
                return self.hift.decode(x=mel, s=s), s

        return HiftWrapper(fold_weight_norm(model.hift))

    def patches(self, model):
        return conv_stft_patch()

    def cases(self, model, seed: int) -> dict[str, Case]:
        import torch

        from exporters.oracles.flow import upstream_flow_mel
        from exporters.oracles.hift import upstream_hift

        s, policy = hift_sizes(model), chunk_policy(model)
        first, steady_new, final_new = frames = case_chunk_frames(policy)
        mel = upstream_flow_mel(model.flow, torch.Generator().manual_seed(seed), n_tokens=(sum(frames) + 1) // 2)
        # upstream's random initial phase has no effect here: drawn (as upstream does), not fed
        oracle = lambda mel, cache, noise, u: upstream_hift(model.hift, mel, cache, noise, u)  # noqa: E731
        return hift_stream_cases(mel.numpy().astype(np.float32), frames, s, policy, seed, oracle)


# ONNX Runtime FP16 variant: not offered (the fp16 policy is for TensorRT only). The sine phase reaches ~1e4 rad
# within a call; fp16 (ulp 8 at 1e4) cannot hold it: measured on the tiny bundle, a whole-graph fp16 conversion's
# audio error has rms 0.05 against a signal rms of 0.15 (max 0.31): not a tolerance, a different signal. The
# mixed graph above (source and magnitude paths fp32) has not been measured on ONNX Runtime's CPU fp16 kernels.
