"""The runtime's seeded random streams, shared with the oracles that inject them into upstream (numpy only).

`FrameNoise`: standard-normal noise for the vocoder's sine source, addressed by absolute mel frame.
`call_phase` (CosyVoice 1): SineGen's random initial phase per harmonic, per vocoder call. `FlowNoise`
(CosyVoice 1): the CFM's initial noise per flow call (upstream draws randn_like(mu) on every call).

Upstream HiFT draws fresh `randn_like` noise on every call, so a streamed utterance and the same
utterance vocoded in one call hear different noise. Here the noise of mel frame `f` (its
`samples_per_frame` output samples x `harmonics`) is a pure function of (seed, f): a counter-based
Philox4x64-10 stream keyed by the seed with the frame index in the counter. Any chunking of an utterance
therefore draws identical noise for the same samples, and two runs with one seed are bitwise equal.

Normals are numpy's float32 ziggurat (`Generator.standard_normal`) over that Philox stream: fast (a few
ns per value; Box-Muller over the raw bits measured ~10x slower here). NumPy keeps bit streams stable
but may change `Generator` algorithms between releases, so equality across numpy versions is not
promised; within one installation it is exact.
"""

from __future__ import annotations

import numpy as np

# second key words, so the seeded streams cannot collide
_DOMAIN = 0x486946544E6F6973  # "HiFTNois"
_PHASE_DOMAIN = 0x4869465450686173  # "HiFTPhas"
_FLOW_DOMAIN = 0x466C6F774E6F6973  # "FlowNois"


def _philox(seed: int, domain: int, counter: int) -> np.random.Generator:
    key = np.array([seed, domain], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key, counter=np.array([0, counter, 0, 0], dtype=np.uint64)))


class FrameNoise:
    """noise(start, count) -> (1, count * samples_per_frame, harmonics) float32, N(0, 1) i.i.d."""

    def __init__(self, seed: int, samples_per_frame: int, harmonics: int):
        if not 0 <= int(seed) < 2**64:
            raise ValueError(f"seed {seed} is not a 64-bit unsigned integer")
        self.seed = int(seed)
        self.samples_per_frame = int(samples_per_frame)
        self.harmonics = int(harmonics)
        self._per_frame = self.samples_per_frame * self.harmonics

    def _frame(self, frame: int) -> np.ndarray:
        """The noise of one mel frame: counter word 1 = frame index, word 0 counts blocks within it."""
        bits = np.random.Philox(
            key=np.array([self.seed, _DOMAIN], dtype=np.uint64), counter=np.array([0, frame, 0, 0], dtype=np.uint64)
        )
        return np.random.Generator(bits).standard_normal(self._per_frame, dtype=np.float32)

    def __call__(self, start: int, count: int) -> np.ndarray:
        if start < 0 or count < 0:
            raise ValueError(f"frames [{start}, {start + count}) are not at non-negative positions")
        out = np.empty((count, self._per_frame), np.float32)
        for i in range(count):
            out[i] = self._frame(start + i)
        return out.reshape(1, count * self.samples_per_frame, self.harmonics)


def phase_uniforms(seed: int, call: int, harmonics: int) -> np.ndarray:
    """(harmonics,) float32 uniforms in [0, 1) for call `call` of an utterance (the call index in the counter)."""
    return _philox(seed, _PHASE_DOMAIN, call).random(harmonics, dtype=np.float32)


def phase_from_uniforms(u: np.ndarray) -> np.ndarray:
    """(1, H) initial phase in [-pi, pi) from uniforms, as upstream SineGen's `Uniform(-pi, pi).sample` computes it
    in float32 (low + u * (high - low)), harmonic 0 forced to 0."""
    low, high = np.float32(-np.pi), np.float32(np.pi)
    phase = (low + np.asarray(u, np.float32).reshape(1, -1) * (high - low)).astype(np.float32)
    phase[:, 0] = 0.0
    return phase


def call_phase(seed: int, call: int, harmonics: int) -> np.ndarray:
    """The initial phase of call `call` of an utterance: (1, harmonics), a pure function of (seed, call)."""
    return phase_from_uniforms(phase_uniforms(seed, call, harmonics))


class FlowNoise:
    """The CFM's initial noise per flow call: noise(call, frames) -> (1, mel_bins, frames) float32, N(0, 1) i.i.d.

    A pure function of (seed, call index, frames): Philox keyed by the seed with the call index in the counter, so
    a request replays bitwise with its seed. Upstream draws `randn_like(mu)` from the global torch RNG on every
    call: no seeded stream reproduces it, tests inject this noise into upstream instead."""

    def __init__(self, seed: int, mel_bins: int):
        if not 0 <= int(seed) < 2**64:
            raise ValueError(f"seed {seed} is not a 64-bit unsigned integer")
        self.seed = int(seed)
        self.mel_bins = int(mel_bins)

    def __call__(self, call: int, frames: int) -> np.ndarray:
        if call < 0 or frames < 0:
            raise ValueError(f"flow call {call} with {frames} frames")
        return _philox(self.seed, _FLOW_DOMAIN, call).standard_normal((1, self.mel_bins, frames), dtype=np.float32)
