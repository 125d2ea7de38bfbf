"""`hift` / `hift.final`: the Fun-CosyVoice3 causal HiFT vocoder (upstream `CausalHiFTGenerator.inference`).

Upstream CosyVoice3Model.token2wav streams by re-running HiFT over ALL mel so far on every call and emitting
only the samples past what it already emitted (no mel/source cache, no cross-fade). The two graphs are
upstream's `inference(mel, finalize)` for each value of the Python-level `finalize` flag:

- `hift` (finalize=False, every non-final call): mel (1, 80, T) -> audio (1, 480 * (T - 8)). The last
  3 (F0 conv lookahead) + 4 (conv_pre lookahead) mel frames are right context only, and the last 480 samples
  of the ISTFT still depend on them: upstream drops them; the sizes are read from the modules.
- `hift.final` (finalize=True, the final call or an offline call): mel (1, 80, T) -> audio (1, 480 * T).

Why one graph per mode and not upstream's split (F0 / source / decoder): every stage is a pure function of
the whole mel, nothing is carried between calls, and the sine phase is recomputed from frame 0 on every call
exactly as upstream does. A split would only add tensors for the runtime to pass around (f0, source) without
making anything more exact. The one piece of randomness is fixed: upstream's `SineGen2(causal=True)` uses
`noise_amp * sine_waves[:, :L]` of a uniform buffer drawn once at construction (its fixed `rand_ini` initial
phase has no effect: the 1/480 linear downsample never reads sample 0). That buffer is an input (`noise`), fed
by the runtime as `data/hift_sine_noise[:, :noise_samples]` (always from sample 0: each call starts at the
utterance's first frame). The pack stores the first MAX_FRAMES * 480 samples (60 s, 51.8 MB fp32) of
upstream's 300 s (259 MB) buffer: the graphs' declared maximum is MAX_FRAMES mel frames, so no call reads
beyond it.

F0: upstream runs the F0 predictor in float64 ("precision is crucial for causal inference"); ONNX Runtime has
no float64 Conv and TensorRT no FP64, so the graph's F0 predictor is float32 (its weight norm is folded in
float64, then rounded once). The F0 difference is integrated by the sine phase; it is bounded by the same
`phase_drift` tolerance as CosyVoice2's HiFT (exporters/graphs/hift.py `hift_tolerances`) and measured in
tests/test_v3_hift.py (voiced bundle: F0 relative error, audio bound use, PCM16 LSB).

Export-only rewrites: `CausalFixedNoiseSource` (upstream SineGen2 causal + SourceModuleHnNSF merge, noise in,
per-frame phase with torch's rounding) and the conv STFT/ISTFT patch of exporters/graphs/hift.py; everything
else is the upstream module (`f0_predictor(mel, finalize)`, `decode(mel, s, finalize)`) with weight norm folded.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np

from exporters.graphs.base import NORM_SOFTMAX, Case, GraphExporter, typical_utterance_tokens
from exporters.graphs.hift import HIFT_ATOL, HIFT_DRIFT, conv_stft_patch, fold_weight_norm
from exporters.model.facts import chunk_policy
from specs.chunk_policy import ChunkPolicy
from specs.io_spec import Dim, DimRange, GraphSpec, ProfileSpec, TensorSpec, TestCase, Tolerance
from specs.precision import Fp32Keep, PrecisionPolicy

MAX_SECONDS = 60  # the longest utterance (all mel so far) one call accepts, as CosyVoice2's hift MAX_FRAMES
NOISE_DATA = "hift_sine_noise"


def v3_hift_sizes(model) -> dict:
    """Every size the graphs and the runtime need, read from the upstream CausalHiFTGenerator."""
    hift = model.hift
    gen = hift.m_source.l_sin_gen
    if not getattr(gen, "causal", False) or not hasattr(hift, "conv_pre_look_right"):
        raise NotImplementedError(f"the v3 hift exporter needs CausalHiFTGenerator, got {type(hift).__name__}")
    spm = int(hift.f0_upsamp.scale_factor)
    tail = int(np.prod(hift.upsample_rates) * hift.istft_params["hop_len"])  # samples dropped after the ISTFT
    if tail % spm:
        raise NotImplementedError(f"non-final tail of {tail} samples is not whole mel frames of {spm}")
    f0_look = int(hift.f0_predictor.condnet[0].causal_padding)
    conv_look = int(hift.conv_pre_look_right)
    sr = int(hift.sampling_rate)
    return {
        "sample_rate": sr,
        "mel_bins": int(hift.conv_pre.in_channels),
        "samples_per_mel_frame": spm,
        "harmonics": int(gen.harmonic_num) + 1,
        "istft_n_fft": int(hift.istft_params["n_fft"]),
        "istft_hop": int(hift.istft_params["hop_len"]),
        "audio_limit": float(hift.audio_limit),
        "f0_lookahead_frames": f0_look,
        "conv_pre_lookahead_frames": conv_look,
        "held_back_frames": f0_look + conv_look + tail // spm,  # non-final: samples = spm * (T - held_back)
        "max_frames": MAX_SECONDS * sr // spm,
        "noise_buffer_samples": int(gen.sine_waves.shape[1]),
    }


def case_frames(policy: ChunkPolicy) -> dict[str, int]:
    """Mel frames of the test calls (all mel so far): upstream's first non-final call (first hop), its second
    (+ hop x stream_scale_factor), a final call after them (+ an odd 37), and a final-only call (odd)."""
    first = policy.mel(policy.token_hop_len)
    second = first + policy.mel(policy.token_hop_len * policy.stream_scale_factor)
    return {"first_call": first, "second_call": second, "final_call": second + 37, "final_only": 37}


@contextlib.contextmanager
def without_fixed_buffers(hift):
    """Hide the 288 MB of fixed buffers (sine_waves, the unused noise-branch uv) while `hift` is deep-copied."""
    import torch

    gen, src = hift.m_source.l_sin_gen, hift.m_source
    saved = gen.sine_waves, src.uv
    gen.sine_waves, src.uv = torch.zeros(1, 0, saved[0].shape[2]), torch.zeros(1, 0, 1)
    try:
        yield
    finally:
        gen.sine_waves, src.uv = saved


def fp32_f0_predictor(f0_predictor):
    """A float32 copy of the F0 predictor, weight norm folded in float64 (as upstream computes it) and then
    rounded once: the weights upstream's float64 convs see, to float32 rounding."""
    import torch

    f0 = copy.deepcopy(f0_predictor).to(torch.float64)
    return fold_weight_norm(f0).to(torch.float32)


def v3_hift_tolerances(finalize: bool) -> dict[str, Tolerance]:
    """`audio` under CosyVoice2's hift `phase_drift` bound (exporters/graphs/hift.py), for the F0 predictor's
    float32-vs-float64 difference integrated by the sine phase. Measured: tests/test_v3_hift.py."""
    tail = "" if finalize else " (non-final: the same samples, minus the held-back tail)"
    return {
        "audio": Tolerance(
            atol=HIFT_ATOL,
            rtol=0.0,
            check="phase_drift",
            drift=HIFT_DRIFT,
            reason="set by F0, not by the vocoder: upstream's F0 predictor runs in float64, the graph's in "
            "float32 (ONNX Runtime has no float64 Conv, TensorRT no FP64), and the sine source integrates F0 "
            "into a phase from the utterance's first frame, so a relative F0 error eps delays every harmonic "
            f"by eps * n samples (drift {HIFT_DRIFT:.2g} = 64 float32 ulps, as CosyVoice2's hift). atol 1e-5 "
            "at the first sample as there. Measured (tests/test_v3_hift.py, tiny v3 bundle): upstream init "
            "(unvoiced, F0 < 10 Hz): max |err| 1.4e-7, float32 rounding of convs and ISTFT; F0 classifier rescaled "
            "to voiced 80..230 Hz: F0 relative error <= 9.2 float32 ulps, max |err| 2.7e-4 (9 PCM16 LSB) at bound "
            "use 0.05; with upstream's F0 pinned to the graph's, <= 2e-6" + tail,
        )
    }


class HiftV3Exporter(GraphExporter):
    """`hift`: upstream `CausalHiFTGenerator.inference(mel, finalize=False)` (every non-final streaming call)."""

    name = "hift"
    finalize = False
    opset = 18
    trace_case = "second_call"
    case_names = ("first_call", "second_call")

    def _sizes(self, model):
        s = v3_hift_sizes(model)
        held = 0 if self.finalize else s["held_back_frames"]
        noise_back = 0 if self.finalize else s["f0_lookahead_frames"]
        return s, held, noise_back

    def spec(self, model) -> GraphSpec:
        s, held, noise_back = self._sizes(model)
        policy = chunk_policy(model)
        frames_of = case_frames(policy)
        spm, h, top = s["samples_per_mel_frame"], s["harmonics"], s["max_frames"]
        opt = policy.mel(typical_utterance_tokens(policy))
        t = lambda n, shape, d: TensorSpec(n, "float32", shape, d)  # noqa: E731
        mode = "final (finalize=True)" if self.finalize else "non-final (finalize=False)"
        emitted = (
            f"all {spm} * T samples"
            if self.finalize
            else f"{spm} * (T - {held}) samples: the last {s['f0_lookahead_frames']} (F0) + "
            f"{s['conv_pre_lookahead_frames']} (conv_pre) frames are right context only and the last "
            f"{spm * (held - s['f0_lookahead_frames'] - s['conv_pre_lookahead_frames'])} ISTFT samples still "
            "depend on them"
        )
        noise_len = f"{spm} * T" if self.finalize else f"{spm} * (T - {noise_back})"
        return GraphSpec(
            graph=self.name,
            description=f"HiFT vocoder of Fun-CosyVoice3, {mode} call of upstream CausalHiFTGenerator.inference: "
            "mel -> F0 (float32) -> harmonic source (upstream's fixed uniform noise as an input) -> waveform. "
            "Streaming (CosyVoice3Model.token2wav): every call gets ALL mel so far and the runtime emits only "
            f"audio[:, already_emitted:]; no caches, no cross-fade. Output: {emitted}.",
            inputs=[
                t("mel", [1, s["mel_bins"], "frames"], f"{s['mel_bins']}-bin log-mel at 50 Hz, all frames so far"),
                t(
                    "noise",
                    [1, "noise_samples", h],
                    f"data/{NOISE_DATA}[:, :{noise_len}]: upstream's fixed uniform [0, 1) sine-source noise "
                    "(SineGen2.sine_waves), always from sample 0",
                ),
            ],
            outputs=[
                t(
                    "audio",
                    [1, "samples"],
                    f"waveform at {s['sample_rate']} Hz in [-{s['audio_limit']}, {s['audio_limit']}]; "
                    "samples before the previous call's length were already emitted and are equal",
                )
            ],
            dims={
                "frames": Dim(held + 1, opt, top, "mel frames so far (the whole utterance)", role="frames"),
                "noise_samples": Dim(
                    spm * (held + 1 - noise_back),
                    spm * (opt - noise_back),
                    spm * (top - noise_back),
                    f"noise rows = {noise_len}",
                    role="samples",
                    derived_from={"dim": "frames", "scale": spm, "offset": -spm * noise_back},
                ),
                "samples": Dim(
                    spm,
                    spm * (opt - held),
                    spm * (top - held),
                    f"output samples = {spm} * (frames - {held})",
                    role="samples",
                    derived_from={"dim": "frames", "scale": spm, "offset": -spm * held},
                ),
            },
            tolerances=v3_hift_tolerances(self.finalize),
            cases=[TestCase(c, f"{frames_of[c]} mel frames ({c.replace('_', ' ')})") for c in self.case_names],
            facts={
                **s,
                "finalize": self.finalize,
                "noise": {
                    "input": "noise",
                    "data": NOISE_DATA,
                    "distribution": "fixed",
                    "dtype": "float32",
                    "shape": ["noise_samples", "harmonics"],
                    "slice": f"data[:, :{noise_len}] (from sample 0 on every call)",
                    "doc": f"upstream's fixed SineGen2.sine_waves, first {top * spm} samples (= max_frames)",
                },
                "initial_phase": "upstream's fixed SineGen2.rand_ini: dropped, it only changes sample 0, which the "
                "1/samples_per_mel_frame linear downsample never reads",
                "emit_rule": "stream: call k gets all mel so far; emit audio[:, emitted_so_far:]; the last call "
                "uses hift.final",
            },
        )

    def profiles(self, spec: GraphSpec, p: ChunkPolicy) -> dict[str, list[ProfileSpec]]:
        """Stream: all mel so far, from the first hop's frames to the declared maximum. The final graph also
        serves offline calls (one call on the whole utterance)."""
        (frames,) = spec.dims_with_role("frames")
        d = spec.dims[frames]
        if not self.finalize:
            lo = max(d.min, p.mel(p.token_hop_len))
            rng = DimRange(lo, max(lo, d.opt), d.max, f"all mel so far: >= the first hop's {lo} frames")
            return {"stream": [ProfileSpec("recompute", "every non-final call: all mel so far", {frames: rng})]}
        rng = DimRange(d.min, d.opt, d.max, "all mel of the utterance (a final-only call can be short)")
        return {
            "stream": [ProfileSpec("final_call", "the final call of a stream: all mel so far", {frames: rng})],
            "offline": [ProfileSpec("utterance", "offline: one call on the whole utterance", {frames: rng})],
        }

    def variants(self, spec: GraphSpec) -> dict[str, PrecisionPolicy]:
        """Declared but offered on no backend: the v3 vocoder stays fp32 (TensorRT plans it in fp32 only)."""
        keep = Fp32Keep(
            ops=NORM_SOFTMAX + ("Exp", "Sin", "Cos", "CumSum", "Div", "Atan", "Log"),
            name_patterns=(r"^/source/", r"f0_predictor"),
            paths=(("Exp", "audio"),),
            reason="what an fp16 HiFT would have to keep: the harmonic source integrates phase over the whole "
            "utterance (cumsum of f0/sr x 2 pi x 480: up to ~1e6 rad), the F0 that drives it (upstream runs F0 in "
            "float64), the magnitude path exp -> clip -> polar -> ISTFT -> audio",
        )
        tol = {
            "audio": Tolerance(
                atol=2e-2,
                rtol=0.0,
                reason="not offered: CosyVoice3's HiFT stays fp32 until a clamp of the Snake activations is "
                "proven (peers report fp16 F0-predictor intermediates up to ~2e4 and F0 errors of 1.6 Hz, "
                "shared/notes v1-v3-export.md §3); no fp16 HiFT graph has been measured here",
            )
        }
        return {
            "fp16": PrecisionPolicy(
                "fp16", "float16", tol, (), keep, doc="not offered on any backend: the v3 vocoder is fp32 only"
            )
        }

    def wrapper(self, model):
        import torch

        s = v3_hift_sizes(model)
        from exporters.rewrites.hift_source import CausalFixedNoiseSource

        class HiftV3Wrapper(torch.nn.Module):
            """Upstream `CausalHiFTGenerator.inference(mel, finalize)` with the F0 predictor in float32 and the
            fixed noise as an input."""

            def __init__(self, hift, finalize: bool, f0_look: int):
                super().__init__()
                self.hift, self.finalize, self.f0_look = hift, finalize, f0_look
                self.source = CausalFixedNoiseSource(hift.m_source, s["samples_per_mel_frame"], s["max_frames"])

            def forward(self, mel, noise):
                f0 = self.hift.f0_predictor(mel, finalize=self.finalize)  # (1, F)
                src = self.source(f0, noise)  # (1, 1, spm * F)
                x = mel if self.finalize else mel[:, :, : -self.f0_look]
                return self.hift.decode(x=x, s=src, finalize=self.finalize)

        with without_fixed_buffers(model.hift):
            hift = fold_weight_norm(model.hift)
            hift.f0_predictor = fp32_f0_predictor(model.hift.f0_predictor)
        return HiftV3Wrapper(hift, self.finalize, s["f0_lookahead_frames"]).eval()

    def patches(self, model):
        return conv_stft_patch()

    def cases(self, model, seed: int) -> dict[str, Case]:
        import torch

        from exporters.oracles.flow import upstream_flow_mel
        from exporters.oracles.hift_v3 import fixed_noise, upstream_hift_v3

        s, held, noise_back = self._sizes(model)
        spm = s["samples_per_mel_frame"]
        frames_of = case_frames(chunk_policy(model))
        longest = max(frames_of.values())
        mel = upstream_flow_mel(model.flow, torch.Generator().manual_seed(seed), n_tokens=(longest + 1) // 2)
        mel = mel.numpy().astype(np.float32)
        buffer = fixed_noise(model.hift)
        out: dict[str, Case] = {}
        for case in self.case_names:
            chunk = np.ascontiguousarray(mel[:, :, : frames_of[case]])
            noise = buffer[:, : spm * (chunk.shape[2] - noise_back)].numpy().copy()
            audio = upstream_hift_v3(model.hift, chunk, self.finalize)
            out[case] = ({"mel": chunk, "noise": noise}, {"audio": audio})
        return out

    def data(self, model):
        s = v3_hift_sizes(model)
        from exporters.oracles.hift_v3 import fixed_noise

        n = s["max_frames"] * s["samples_per_mel_frame"]
        noise = fixed_noise(model.hift)[:, :n].numpy().astype(np.float32)
        return {
            NOISE_DATA: (
                noise,
                f"upstream SineGen2(causal=True).sine_waves[:, :{n}] (uniform [0, 1), fixed at construction): the "
                f"hift graphs' `noise` input is its first rows; {n} = {MAX_SECONDS} s = the graphs' max frames",
            )
        }


class HiftV3FinalExporter(HiftV3Exporter):
    """`hift.final`: upstream `CausalHiFTGenerator.inference(mel, finalize=True)` (a stream's final call, or an
    offline call on the whole utterance)."""

    name = "hift.final"
    finalize = True
    trace_case = "final_call"
    case_names = ("final_call", "final_only")


# ONNX Runtime FP16 variant: not offered, as for CosyVoice2's hift: the sine phase (up to ~1e6 rad over a 60 s
# utterance) cannot be held in fp16.
