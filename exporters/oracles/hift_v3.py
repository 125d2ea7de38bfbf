"""Upstream CosyVoice3 `CausalHiFTGenerator` as the parity oracle.

Unlike CosyVoice2's HiFT, the causal HiFT draws nothing at inference: `SineGen2(causal=True)` adds the fixed
`rand_ini` (no effect: the 1/480 linear downsample never reads sample 0) and uses `noise_amp *
self.sine_waves[:, :L]`, a uniform buffer made once at construction. So the oracle is upstream's own call with
nothing patched; the graph is fed the same buffer's slice as its `noise` input.

One side effect is undone: `CausalHiFTGenerator.inference` casts its F0 predictor to float64 *in place*
(`self.f0_predictor.to(torch.float64)`) and leaves it so. `restored_f0_dtype` puts the predictor back to the
dtype it had (float32 -> float64 -> float32 is exact), so a shared model is not changed by an oracle call.

`upstream_streaming_vocoder_v3` drives upstream's own `CosyVoice3Model.token2wav` (mel accumulated over calls,
`hift.inference(all mel, finalize)`, `speech[:, speech_offset:]` emitted) with a stand-in flow returning a
fixed mel, so the streaming reference is upstream's code, not a re-implementation.
"""

from __future__ import annotations

import contextlib

import numpy as np

from exporters.oracles.hift import _FixedMelFlow, token2wav_without_prompt


def fixed_noise(hift):
    """Upstream's fixed uniform noise buffer of the causal sine source, (1, 300 s * sr, harmonics)."""
    return hift.m_source.l_sin_gen.sine_waves


@contextlib.contextmanager
def restored_f0_dtype(hift):
    """Undo `CausalHiFTGenerator.inference`'s in-place float64 cast of the F0 predictor on exit."""
    param = next(hift.f0_predictor.parameters(), None)  # None: a stand-in predictor without weights
    dtype = param.dtype if param is not None else None  # read now: .to() may change this tensor's dtype in place
    try:
        yield
    finally:
        if dtype is not None:
            hift.f0_predictor.to(dtype)


def upstream_hift_v3(hift, mel: np.ndarray, finalize: bool) -> np.ndarray:
    """`hift.inference(mel, finalize)` as upstream runs it (F0 in float64): speech (1, S) float32."""
    import torch

    with restored_f0_dtype(hift):
        speech, _ = hift.inference(speech_feat=torch.from_numpy(np.ascontiguousarray(mel)), finalize=finalize)
    return speech.numpy().copy()


def upstream_f0_v3(hift, mel: np.ndarray, finalize: bool) -> np.ndarray:
    """Upstream's F0 (float64 predictor, cast to float32 as `inference` does): (1, frames')."""
    import torch

    with restored_f0_dtype(hift), torch.no_grad():
        hift.f0_predictor.to(torch.float64)
        f0 = hift.f0_predictor(torch.from_numpy(np.ascontiguousarray(mel)).to(torch.float64), finalize=finalize)
    return f0.to(torch.float32).numpy().copy()


def upstream_streaming_vocoder_v3(
    hift, mel: np.ndarray, hops: list[int], token_mel_ratio: int = 2, pre_lookahead_len: int = 3
) -> list[np.ndarray]:
    """Run upstream `CosyVoice3Model.token2wav` over `mel` in token hops (the last hop is the final call) and
    return the speech each call emits (float32, (1, n))."""
    import torch
    from cosyvoice.cli.model import CosyVoice3Model

    mel_t = torch.from_numpy(np.ascontiguousarray(mel))
    up = CosyVoice3Model(None, _FixedMelFlow(mel_t, token_mel_ratio, pre_lookahead_len), hift)
    uuid = "oracle"
    up.hift_cache_dict[uuid] = None
    out, token_offset = [], 0
    with restored_f0_dtype(hift):
        for k, hop in enumerate(hops):
            final = k == len(hops) - 1
            n_tokens = token_offset + hop + (0 if final else pre_lookahead_len)
            speech = token2wav_without_prompt(up, n_tokens, token_offset, uuid, final)
            out.append(speech.numpy().copy())
            token_offset += hop
    return out
