"""Vocoder stage for packs whose chunk policy says `vocoder: recompute` (Fun-CosyVoice3's causal HiFT), replaying
the HiFT part of upstream `CosyVoice3Model.token2wav`:

1. the mel of this call is appended to all mel so far (upstream's `hift_cache_dict[uuid]['mel']`);
2. audio = hift(all mel, noise) on a non-final call, hift.final(all mel, noise) on the final one, where noise is
   the pack's fixed sine-source noise from sample 0 (upstream's `SineGen2.sine_waves`, no RNG anywhere);
3. emit audio[already_emitted:] (upstream's `speech_offset`) as PCM16.
No cache, no cross-fade: the causal HiFT's output up to the previous call's length does not change. The noise
length per call comes from the graph's spec (`noise_samples` derived from `frames`), the rest from the policy.
"""

from __future__ import annotations

import numpy as np

from backends.runner import Runner
from runtime.vocoder import checked_mel, pcm16
from specs.chunk_policy import ChunkPolicy
from specs.errors import ToolError
from specs.pack import Pack

GRAPH, FINAL_GRAPH = "hift", "hift.final"


def noise_rows(spec, frames: int) -> int:
    """Rows of `noise` the graph takes for `frames` mel frames (its spec's derived dim)."""
    d = spec.dims["noise_samples"].derived_from
    return int(d["scale"]) * frames + int(d["offset"])


class RecomputeVocoder:
    """One utterance at a time: `push` each call's new mel frames, the last with final=True."""

    def __init__(self, session: Runner, final_session: Runner, policy: ChunkPolicy, noise: np.ndarray):
        if policy.vocoder != "recompute":
            raise ToolError(GRAPH, f"chunk policy vocoder is {policy.vocoder!r}", "'recompute' for this stage")
        self.sessions = {False: session, True: final_session}
        self.mel_bins = int(session.spec.facts["mel_bins"])
        self.noise = noise  # (1, samples, harmonics), memory-mapped pack data
        self.reset()

    @staticmethod
    def pack_noise(pack: Pack, session: Runner) -> np.ndarray:
        """The fixed sine noise the graph's facts name (memory-mapped pack data): opened once per engine."""
        return pack.data(str(session.spec.facts["noise"]["data"]))

    def reset(self) -> None:
        self._mel = np.zeros((1, self.mel_bins, 0), np.float32)
        self._emitted = 0

    def push(self, mel: np.ndarray, final: bool = False) -> np.ndarray:
        """Vocode all mel so far; returns the PCM16LE samples not emitted before (int16 '<i2')."""
        return pcm16(self._synthesize(mel, final))

    def _synthesize(self, mel: np.ndarray, final: bool) -> np.ndarray:
        mel = checked_mel(mel, self.mel_bins, GRAPH)
        self._mel = np.concatenate([self._mel, mel], axis=2)
        session = self.sessions[final]
        frames = self._mel.shape[2]
        if frames < session.spec.dims["frames"].min:
            if not final:
                return np.zeros(0, np.float32)  # too few frames for a non-final call to say anything yet
            raise ToolError(FINAL_GRAPH, f"{frames} mel frames", f"at least {session.spec.dims['frames'].min}")
        rows = noise_rows(session.spec, frames)
        if rows > self.noise.shape[1]:
            raise ToolError(
                GRAPH, f"{frames} mel frames need {rows} noise samples", f"at most {self.noise.shape[1]} (pack data)"
            )
        audio = session.run(
            {"mel": np.ascontiguousarray(self._mel), "noise": np.ascontiguousarray(self.noise[:, :rows])}
        )
        audio = audio["audio"][0]
        new = audio[self._emitted :]
        self._emitted += new.shape[0]
        if final:
            self.reset()
        return new
