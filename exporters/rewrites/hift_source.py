"""HiFT's harmonic-plus-noise source (`SineGen2` + `SourceModuleHnNSF`) with the noise as an input: CosyVoice2's
(`NoiseDrivenSource`) and CosyVoice3's causal one (`CausalFixedNoiseSource`), one `HarmonicSource` between them.
CosyVoice 1's `SineGen` (`NoisePhaseDrivenSource`, at the end) also takes its random initial phase as an input.

Upstream draws `randn_like` noise and a `rand` initial phase inside `SineGen2.forward`; a graph cannot
carry either, so this module takes the standard-normal noise as a tensor and drops the initial phase
(it only touches the call's first sample, which the 1/upsample linear downsample never reads: proven
by tests/test_hift_random_phase.py). It re-derives upstream's float32 arithmetic in the same order:

1. per-frame phase increments `rad = (f0 * h / sample_rate) mod 1`, h = 1..harmonics: upstream builds
   these at the sample rate from the nearest-upsampled F0 and linearly downsamples by 1/upsample, which
   (weights 0.5 / 0.5 on two equal neighbours) returns exactly the per-frame value;
2. `phase = cumsum(rad over frames) * 2 * pi`, then `* upsample` and a linear upsample by `upsample`
   (align_corners=False, source index clamped at 0, last frame repeated), written with explicit
   gathers so the interpolation weights are computed as torch computes them (`(j + 0.5) * (1/up) - 0.5`)
   rather than by ONNX Resize's `(j + 0.5) / up - 0.5`. The phase reaches ~1e4 rad, where one float32
   ulp is ~1e-3 rad, so the cumsum and the interpolation are rounded exactly as torch rounds them
   (exporters/rewrites/exact_float.py): then the graph's source equals upstream's to float32 rounding of sin;
3. `sines = sin(phase) * sine_amp`; `uv = f0 > voiced_threshold` per sample;
   `noise = (uv * noise_std + (1 - uv) * sine_amp / 3) * noise_in`; `sines * uv + noise`;
4. upstream's own `l_linear` + `l_tanh` merge the harmonics into one source signal.

Every constant comes from the upstream modules (`m_source.l_sin_gen`, `f0_upsamp`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from exporters.rewrites.exact_float import exact_cumsum, fma, split, two_sum


class HarmonicSource(torch.nn.Module):
    """Upstream SineGen2 + SourceModuleHnNSF with the noise as an input: f0 (1, frames) + noise (1, samples,
    harmonics) -> source (1, 1, samples), samples = upsample * frames. The families differ only in how the
    per-frame phase reaches the sample rate (`upsample_phase`) and in what their upstream generator must be."""

    def __init__(self, m_source, upsample: int):
        super().__init__()
        gen = m_source.l_sin_gen
        self.upsample = int(upsample)
        self.harmonics = int(gen.harmonic_num) + 1
        self.sample_rate = float(gen.sampling_rate)
        self.sine_amp = float(gen.sine_amp)
        self.noise_std = float(gen.noise_std)
        self.voiced_threshold = float(gen.voiced_threshold)
        self.merge = m_source.l_linear  # upstream Linear(harmonics -> 1)
        self.squash = m_source.l_tanh
        self.register_buffer("multiples", torch.arange(1, self.harmonics + 1, dtype=torch.float32), persistent=False)

    def upsample_phase(self, phase: torch.Tensor) -> torch.Tensor:
        """(1, frames, H) per-frame phase -> the per-sample phase, (1, frames * upsample, H) or
        (1, frames, upsample, H), times upsample as upstream scales it."""
        raise NotImplementedError

    def forward(self, f0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        frames = f0.shape[1]
        fn = f0.unsqueeze(-1) * self.multiples  # (1, frames, H)
        rad = torch.remainder(fn / self.sample_rate, 1.0)
        phase = exact_cumsum(rad, dim=1) * 2 * math.pi  # x2 is exact: folding it into 2*pi is harmless
        phase = self.upsample_phase(phase)
        sines = (torch.sin(phase) * self.sine_amp).reshape(1, frames, self.upsample, self.harmonics)
        # uv and the noise amplitude are constant within a frame (upstream: nearest-upsampled F0).
        uv = (f0 > self.voiced_threshold).to(torch.float32).reshape(1, frames, 1, 1)
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        excitation = sines * uv + noise_amp * noise.reshape(1, frames, self.upsample, self.harmonics)
        excitation = excitation.reshape(1, frames * self.upsample, self.harmonics)
        return self.squash(self.merge(excitation)).transpose(1, 2)


class NoiseDrivenSource(HarmonicSource):
    """CosyVoice2's non-causal SineGen2, standard-normal noise in (steps 1-4 of the module docstring)."""

    def __init__(self, m_source, upsample: int):
        gen = m_source.l_sin_gen
        if getattr(gen, "causal", False) or getattr(gen, "flag_for_pulse", False) or not hasattr(gen, "upsample_scale"):
            raise NotImplementedError(
                f"only the non-causal SineGen2 of CosyVoice2 is supported, got {type(gen).__name__}"
            )
        if int(gen.upsample_scale) != int(upsample):
            raise ValueError(f"SineGen2 upsample_scale {gen.upsample_scale} != f0 upsample {upsample}")
        super().__init__(m_source, upsample)

    def upsample_phase(self, phase: torch.Tensor) -> torch.Tensor:
        return self.upsample_linear(phase, gain=self.upsample)  # upstream: interpolate(phase * upsample)

    def upsample_linear(self, x: torch.Tensor, gain: float) -> torch.Tensor:
        """(1, frames, H) -> (1, frames * upsample, H): torch's linear interpolate of `x * gain`
        (align_corners=False, source index clamped at 0, last frame repeated), rounded as its
        FMA-contracted CPU kernel rounds.

        `gain` is applied after the gathers (selection commutes with it, bit for bit): right after
        `cumsum * 2 * pi` a Mul would be folded by onnxsim into one Mul by 2*pi*gain, which rounds once
        where upstream rounds twice."""
        frames = x.shape[1]
        j = torch.arange(frames * self.upsample, device=x.device).to(torch.float32)
        inv = torch.tensor(1.0 / self.upsample, dtype=torch.float32)
        src = torch.clamp(fma(j + 0.5, inv, torch.tensor(-0.5)), min=0.0)
        lower = torch.floor(src)
        lam = (src - lower).unsqueeze(-1)
        i0 = lower.to(torch.int64)
        i1 = torch.minimum(i0 + 1, torch.full_like(i0, 1) * (frames - 1))
        return fma(1.0 - lam, x[:, i0] * gain, lam * (x[:, i1] * gain))


class CausalFixedNoiseSource(HarmonicSource):
    """CosyVoice3's SineGen2(causal=True), its fixed uniform noise (a slice of `sine_waves`) in, in upstream's
    float32 arithmetic and order: as steps 1, 3, 4 of the module docstring (its `rand_ini` on sample 0 is never
    read), but step 2 is `phase = cumsum(rad) * 2 * pi`, `* upsample` and a nearest upsample: a plain copy,
    floor(j * float32(1/upsample)) == j // upsample for every j below the declared maximum (checked here); the
    `* upsample` is applied after the copy so no simplifier can merge it with `* pi` into one rounding."""

    def __init__(self, m_source, upsample: int, max_frames: int):
        gen = m_source.l_sin_gen
        if not gen.causal or gen.flag_for_pulse or int(gen.upsample_scale) != upsample:
            raise NotImplementedError("only SineGen2(causal=True) with upsample_scale == the F0 upsample")
        j = np.arange(max_frames * upsample, dtype=np.float32)
        if not np.array_equal(np.floor(j * np.float32(1.0 / upsample)), np.arange(j.size) // upsample):
            raise NotImplementedError(f"torch's nearest x{upsample} is not a plain repeat up to {max_frames}")
        if max_frames > 2**12:
            raise NotImplementedError(f"exact_cumsum is exact for <= 4096 frames, not {max_frames}")
        super().__init__(m_source, upsample)

    def upsample_phase(self, phase: torch.Tensor) -> torch.Tensor:
        return phase.unsqueeze(2).expand(-1, -1, self.upsample, -1) * self.upsample  # (1, F, up, H)


# CosyVoice 1's source: F0 * harmonic / sample_rate is summed per output sample, not per frame, and not reduced
# mod 1 first, so the addends are only bounded by the F0. The split below is exact while every addend is below
# SAMPLE_CUMSUM_BOUND: F0 < 4 * 22050 / 9 = 9800 Hz for 9 harmonics, far above any voice.
SAMPLE_CUMSUM_BOUND = 4.0
_CUMSUM_PARTS = 3  # exact parts of each addend; the rest (below BOUND * 2^-(3 * bits)) is summed in float32


class NoisePhaseDrivenSource(HarmonicSource):
    """CosyVoice 1's SineGen ("type 1", 22 050 Hz) + SourceModuleHnNSF with both random draws as inputs: the
    standard-normal noise (upstream `randn_like`) and the initial phase per harmonic (upstream a fresh
    `Uniform(-pi, pi)` draw per call, harmonic 0 zeroed). Unlike SineGen2 the initial phase is added to every
    sample's phase, so it changes the output and must be an input.

    Upstream, in float32: `F = f0 * (h + 1) / sr` per sample (F0 nearest-upsampled), `theta = 2 * pi *
    (cumsum(F) mod 1)` over the call's samples, `sin(theta + phase)`. torch's CPU cumsum accumulates in double
    and rounds each prefix once; at ~1e5 (a long call) one float32 ulp of it is ~1e-2, a sizeable phase error,
    so the graph rounds where upstream rounds: F is constant within a frame, so the prefix at sample j of
    frame k is `upsample * sum(F[:k]) + (j + 1) * F[k]`, with
    - the frame sum exact: each F split on grids of `24 - log2(max_frames)` bits, whose running sums are then
      exact in float32 in any order (as `exact_cumsum`, more frames and a larger bound), times the
      power-of-two upsample;
    - `(j + 1) * F[k]` exact as two float32 products (F split into 12-bit halves, j + 1 has <= 12 bits);
    - the terms added with error-free sums and rounded once (up to rare double-rounding ties: 1 ulp, a
      relative 2^-24 phase error, far inside the hift `phase_drift` budget).
    Then steps 3-4 of the module docstring."""

    def __init__(self, m_source, upsample: int, max_frames: int):
        gen = m_source.l_sin_gen
        if type(gen).__name__ != "SineGen":
            raise NotImplementedError(f"only CosyVoice 1's SineGen is supported, got {type(gen).__name__}")
        if upsample < 1 or upsample & (upsample - 1) or upsample > 2**12:
            raise NotImplementedError(f"upsample {upsample}: the exact frame sum needs a power of two <= 4096")
        count_bits = max(1, math.ceil(math.log2(max_frames)))
        if count_bits > 16:
            raise NotImplementedError(f"max_frames {max_frames}: the exact frame sum is for <= 65536 frames")
        super().__init__(m_source, upsample)
        self.part_bits = 24 - count_bits  # running sums of <= 2^count_bits such parts fit 24 bits
        mask = torch.ones(self.harmonics)
        mask[0] = 0.0  # upstream zeroes the fundamental's initial phase
        self.register_buffer("phase_mask", mask.reshape(1, 1, 1, -1), persistent=False)
        steps = torch.arange(1, self.upsample + 1, dtype=torch.float32).reshape(1, 1, -1, 1)
        self.register_buffer("steps", steps, persistent=False)  # j + 1: samples of the frame summed so far

    def frame_prefix(self, inc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, frames, H) per-sample increments -> upsample * sum(inc[:, :k]) as (hi, lo), (1, frames, 1, H)."""
        parts, rest, step = [], inc, SAMPLE_CUMSUM_BOUND
        for _ in range(_CUMSUM_PARTS):
            step = step * 2.0**-self.part_bits
            part = torch.floor(rest * (1.0 / step)) * step  # integer multiples of step below 2^part_bits
            parts.append(torch.cumsum(part, dim=1))
            rest = rest - part  # exact
        hi, e1 = two_sum(parts[0], parts[1])
        hi, e2 = two_sum(hi, parts[2])
        lo = (e1 + e2) + torch.cumsum(rest, dim=1)
        # exclusive: frame k needs the frames before it
        hi, lo = (torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1) for x in (hi, lo))
        return (hi * self.upsample).unsqueeze(2), (lo * self.upsample).unsqueeze(2)

    def sample_phase(self, inc: torch.Tensor) -> torch.Tensor:
        """fl32(cumsum over samples of the frame-constant increments), rounded once: (1, frames, upsample, H)."""
        hi, lo = self.frame_prefix(inc)
        inc_hi, inc_lo = split(inc)
        s, e1 = two_sum(hi, inc_hi.unsqueeze(2) * self.steps)  # the products are exact
        s, e2 = two_sum(s, inc_lo.unsqueeze(2) * self.steps)
        return s + ((e1 + e2) + lo)

    def forward(self, f0: torch.Tensor, noise: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        frames = f0.shape[1]
        inc = f0.unsqueeze(-1) * self.multiples / self.sample_rate  # (1, frames, H), upstream's order
        theta = torch.remainder(self.sample_phase(inc), 1.0) * (2 * math.pi)
        sines = torch.sin(theta + phase.reshape(1, 1, 1, -1) * self.phase_mask) * self.sine_amp
        # as HarmonicSource.forward from here: uv and noise amplitude are constant within a frame
        uv = (f0 > self.voiced_threshold).to(torch.float32).reshape(1, frames, 1, 1)
        noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        excitation = sines * uv + noise_amp * noise.reshape(1, frames, self.upsample, self.harmonics)
        excitation = excitation.reshape(1, frames * self.upsample, self.harmonics)
        return self.squash(self.merge(excitation)).transpose(1, 2)
