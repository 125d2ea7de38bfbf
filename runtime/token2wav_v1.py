"""CosyVoice 1's token -> audio call, replaying upstream `CosyVoiceModel.token2wav` (notes: upstream-inference 6.2)
for one utterance, call by call, as the window schedule (specs/chunk_policy.py WindowSchedule) makes them:

1. mel, flow_cache = flow(prompt + window tokens, fresh noise, flow_cache): the ODE's first prompt +
   flow_cache_frames noise and mu frames come from the previous call (runtime/flow_v1.py);
2. if a previous call held back a mel tail: `mel[:, :, :n] = mel[:, :, :n] * w[:n] + tail * w[n:]`,
   w = hamming(2 * mel_overlap_len), n = mel_overlap_len (float64 products, as upstream's fade_in_out with a
   numpy window, rounded to float32);
3. not final: the last mel_overlap_len frames are held back for the next call's fade and the rest goes to the
   cached vocoder (runtime/vocoder.py: mel cache, source cache, speech cross-fade); final: everything goes.

Noise: upstream draws `randn_like(mu)` per flow call; here call k of an utterance draws `FlowNoise(seed)(k, frames)`,
a counter-based stream keyed by (seed, k), so the same seed gives the same bytes.
"""

from __future__ import annotations

import numpy as np

from runtime.flow_v1 import FlowCache, V1FlowStage
from specs.chunk_policy import ChunkPolicy, FlowCall
from specs.noise import FlowNoise


class WindowToken2Wav:
    def __init__(self, flow: V1FlowStage, vocoder, policy: ChunkPolicy, seed: int):
        self.flow = flow
        self.vocoder = vocoder
        self.overlap = int(policy.mel_overlap_len)
        self.window = np.hamming(2 * self.overlap)  # upstream's mel_window, float64
        self.noise = FlowNoise(seed, flow.mel_bins)
        self.calls = 0
        self.flow_cache = FlowCache.empty(flow.mel_bins)
        self.mel_tail: np.ndarray | None = None

    def __call__(self, tokens, call: FlowCall, prompt_tokens, prompt_feat, embedding) -> np.ndarray:
        """PCM16 of one call over `tokens[call.start:call.end]`."""
        window = np.asarray(tokens[call.start : call.end], np.int64)
        prompt_frames = np.asarray(prompt_feat).reshape(1, -1, self.flow.mel_bins).shape[1]
        noise = self.noise(self.calls, self.flow.frames(len(window), prompt_frames))
        mel, self.flow_cache = self.flow.inference(
            window, prompt_tokens, prompt_feat, embedding, noise, self.flow_cache
        )
        self.calls += 1
        if self.mel_tail is not None:
            mel = self._fade_in(mel, self.mel_tail)
        if call.finalize:
            self.mel_tail = None
            return self.vocoder.push(mel, final=True)
        self.mel_tail = mel[:, :, -self.overlap :].copy()
        return self.vocoder.push(np.ascontiguousarray(mel[:, :, : -self.overlap]), final=False)

    def _fade_in(self, mel: np.ndarray, tail: np.ndarray) -> np.ndarray:
        n, w = self.overlap, self.window
        mel = mel.copy()
        mel[:, :, :n] = (mel[:, :, :n].astype(np.float64) * w[:n] + tail[:, :, -n:].astype(np.float64) * w[n:]).astype(
            np.float32
        )
        return mel
