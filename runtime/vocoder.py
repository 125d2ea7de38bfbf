"""Vocoder stage of the runtime: mel chunks -> PCM16LE, replaying the HiFT part of upstream CosyVoice2's
`CosyVoice2Model.token2wav` over the `hift` graph.

Per call (upstream order):
1. mel_in = the previous call's last `mel_cache_len` mel frames + the new frames; cache_source = the
   previous call's last `source_cache_len` source samples (zero-length on the first call: same graph);
2. audio, source = hift(mel_in, cache_source, noise);
3. if a previous call exists: `audio[:n] = audio[:n] * w[:n] + prev_tail * w[n:]`, w = hamming(2n),
   n = len(w) // 2, in float64 as upstream's fade_in_out computes it (torch promotes to the numpy
   window's float64), rounded to float32;
4. not final: keep mel_in[-mel_cache_len:], source[-source_cache_len:], audio[-source_cache_len:] (after
   the fade) and emit audio[:-source_cache_len]; final: emit everything and forget the state (upstream:
   HiFT state does not cross requests).
The float audio is converted to PCM16 here and never leaves this stage.

PCM: `clip(rint(x * 32768), -32768, 32767)` (round to nearest, saturate). Upstream's servers write
`(x * 2**15).astype(int16)`, which truncates toward zero (a bias of up to 1 LSB) and wraps on overflow:
HiFT clamps to +-0.99, but the hamming halves sum to ~1.08, so the cross-fade can exceed full scale and
upstream's conversion would then flip the sign of a sample.

Noise: `specs.noise.FrameNoise`, addressed by absolute mel frame, so the chunking does not change
which noise a sample hears. A graph with a `phase` input (CosyVoice 1's SineGen draws a random initial
phase per harmonic on every call) gets `call_phase(seed, k)` on the utterance's k-th call. All constants
come from the pack: the typed chunk policy (specs/chunk_policy.py) and the hift graph's spec facts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.ort import OrtRunner
from backends.runner import Runner
from specs.chunk_policy import ChunkPolicy
from specs.errors import ToolError
from specs.noise import FrameNoise, call_phase
from specs.pack import Pack

GRAPH = "hift"
PCM_DTYPE = np.dtype("<i2")


def pcm16(audio: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1) -> little-endian int16, rounded to nearest and saturated."""
    scaled = np.rint(np.asarray(audio, np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(PCM_DTYPE)


def checked_mel(mel: np.ndarray, mel_bins: int, graph: str) -> np.ndarray:
    """A vocoder's mel chunk: float32 (1, mel_bins, frames), else a one-line error naming the graph."""
    mel = np.asarray(mel)
    if mel.dtype != np.float32 or mel.ndim != 3 or mel.shape[:2] != (1, mel_bins):
        raise ToolError(
            graph, f"mel chunk has shape {list(mel.shape)} dtype {mel.dtype}", f"float32 (1, {mel_bins}, frames)"
        )
    return mel


def crossfade_window(kind: str, length: int) -> np.ndarray:
    if kind != "hamming":  # the manifest schema allows only hamming; kept for callers outside a pack
        raise ToolError("audio.chunk_policy.crossfade.window", f"is {kind!r}", "'hamming' (upstream speech_window)")
    return np.hamming(length)  # float64, as upstream's np.hamming(2 * source_cache_len)


@dataclass
class _Cache:
    mel: np.ndarray  # (1, mel_bins, mel_cache_len)
    source: np.ndarray  # (1, 1, source_cache_len)
    speech: np.ndarray  # (source_cache_len,) float32, after the fade


class VocoderStage:
    """Streaming HiFT over the `hift` graph for one utterance at a time (`push` mel chunks, the last
    with final=True)."""

    def __init__(self, session: Runner, policy: ChunkPolicy, seed: int = 0):
        facts = session.spec.facts
        self.session = session
        self.mel_bins = int(facts["mel_bins"])
        self.samples_per_frame = policy.samples_per_mel_frame
        self.mel_cache_len = policy.mel_cache_len
        self.source_cache_len = policy.source_cache_len
        self.window = crossfade_window(policy.crossfade.window, policy.crossfade.length)
        self.overlap = len(self.window) // 2  # fits the held-back tail: ChunkPolicy.check
        self.noise = FrameNoise(seed, self.samples_per_frame, int(facts["harmonics"]))
        self.seed, self.harmonics = int(seed), int(facts["harmonics"])
        self.has_phase = "phase" in session.spec.input_names  # CosyVoice 1 only
        self.reset()

    @classmethod
    def from_pack(cls, pack: Pack, seed: int = 0, device: str = "cpu", threads: int | None = None) -> VocoderStage:
        entry = pack.graph(GRAPH)
        session = OrtRunner(entry.onnx_path, entry.spec(), device=device, threads=threads)
        return cls(session, pack.chunk_policy, seed=seed)

    def reset(self) -> None:
        """Forget the previous utterance (caches, the absolute frame position of the noise, the call index)."""
        self._cache: _Cache | None = None
        self._next_frame = 0
        self._call = 0

    def push(self, mel: np.ndarray, final: bool = False) -> np.ndarray:
        """Vocode the next mel chunk (1, mel_bins, frames); returns its PCM16LE samples (int16 '<i2')."""
        return pcm16(self._synthesize(mel, final))

    def _synthesize(self, mel: np.ndarray, final: bool) -> np.ndarray:
        """The float audio `push` would convert (kept private: parity tests read it before PCM)."""
        mel = checked_mel(mel, self.mel_bins, GRAPH)
        cache = self._cache
        if cache is None:
            mel_in, cache_source = mel, np.zeros((1, 1, 0), np.float32)
        else:
            mel_in, cache_source = np.concatenate([cache.mel, mel], axis=2), cache.source
        if not final and mel_in.shape[2] < self.mel_cache_len:
            raise ToolError(
                GRAPH,
                f"non-final chunk gives {mel_in.shape[2]} mel frames",
                f"at least mel_cache_len = {self.mel_cache_len} (what the next call re-reads)",
            )
        first = self._next_frame - (cache.mel.shape[2] if cache else 0)
        feed = {
            "mel": np.ascontiguousarray(mel_in),
            "cache_source": cache_source,
            "noise": self.noise(first, mel_in.shape[2]),
        }
        if self.has_phase:
            feed["phase"] = call_phase(self.seed, self._call, self.harmonics)
        out = self.session.run(feed)
        self._call += 1
        audio, source = out["audio"][0], out["source"]
        if cache is not None:
            audio = self._fade_in(audio, cache.speech)
        self._next_frame += mel.shape[2]
        if final:
            self.reset()
            return audio
        self._cache = _Cache(
            mel=mel_in[:, :, -self.mel_cache_len :].copy(),
            source=np.ascontiguousarray(source[:, :, -self.source_cache_len :]),
            speech=audio[-self.source_cache_len :].copy(),
        )
        return audio[: audio.shape[0] - self.source_cache_len]

    def _fade_in(self, audio: np.ndarray, previous_tail: np.ndarray) -> np.ndarray:
        n = self.overlap
        audio = audio.copy()
        faded = audio[:n].astype(np.float64) * self.window[:n] + previous_tail[-n:].astype(np.float64) * self.window[n:]
        audio[:n] = faded.astype(np.float32)
        return audio
