"""Upstream CosyVoice 1 flow (`MaskedDiffWithXvec`) as the parity oracle, with its noise made explicit.

`ConditionalCFM.forward` draws `z = torch.randn_like(mu)` on every flow call. `injected_noise` replaces that
draw, for the duration of upstream calls, by arrays the caller supplies (the runtime's seeded noise), and
fails loudly on any other random draw. `upstream_pre_ode_v1` records what upstream's `flow.inference` hands
its CFM (mu, spks, cond) with the decoder replaced by a stub. `upstream_stream_mels` drives upstream's own
`CosyVoiceModel.tts` window loop (voice-conversion path: the tokens are given, no LLM) with a silent HiFT and
records every flow call: its token window, the flow cache it got, and the mel the flow returned.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from exporters.oracles.flow import SilentHift, drain_tts, i32
from specs.io_spec import Tolerance

# Runtime V1FlowStage (flow.encoder + 10 CFG Euler steps over flow.decoder.estimator on ONNX Runtime, flow cache
# in numpy) vs upstream MaskedDiffWithXvec.inference with the same noise, per flow call. Set from
# tests/test_v1_flow.py.
TOKEN2MEL_TOLERANCE_V1 = Tolerance(
    atol=2e-4,
    rtol=1e-4,
    reason="10 U-Net velocity errors (fp32 reassociation, <= 5.5e-6 each on the tiny bundle) weighted by the CFG "
    "factors 1.7 and 0.7 over dt summing to 1, plus the encoder's mu error (<= 1.4e-6); measured <= 6.2e-6 "
    "tiny on offline calls and 3-call window chains with and without a prompt (|mel| up to ~6), ~30x headroom. "
    "Other noise moves the mel by >= 6.8, a dropped flow cache by >= 5.1, a cache one frame short by >= 3.0",
)


@dataclass
class RandnCall:
    shape: tuple[int, ...]


@contextlib.contextmanager
def injected_noise(draw: Callable[[int, tuple[int, ...]], np.ndarray]):
    """Replace `torch.randn_like` by `draw(call_index, shape)` (a float32 array of that shape) while upstream
    runs; yields the list of calls made. Any other torch random draw raises."""
    import torch

    calls: list[RandnCall] = []
    real_randn_like = torch.randn_like

    def randn_like(t, *args, **kwargs):
        shape = tuple(t.shape)
        arr = np.asarray(draw(len(calls), shape), dtype=np.float32)
        if arr.shape != shape:
            raise RuntimeError(f"injected noise for call {len(calls)} has shape {arr.shape}, upstream wants {shape}")
        calls.append(RandnCall(shape))
        return torch.from_numpy(arr.copy()).to(t.dtype)

    def refuse(*args, **kwargs):
        raise RuntimeError("upstream made a random draw this oracle does not inject")

    saved = {name: getattr(torch, name) for name in ("randn", "rand", "randint", "rand_like")}
    torch.randn_like = randn_like
    for name in saved:
        setattr(torch, name, refuse)
    try:
        yield calls
    finally:
        torch.randn_like = real_randn_like
        for name, fn in saved.items():
            setattr(torch, name, fn)


def _flow_kwargs(token, prompt, prompt_feat, embedding) -> dict:
    import torch

    return {
        "token": i32(token),
        "token_len": torch.tensor([token.shape[1]], dtype=torch.int32),
        "prompt_token": i32(prompt),
        "prompt_token_len": torch.tensor([prompt.shape[1]], dtype=torch.int32),
        "prompt_feat": torch.from_numpy(np.ascontiguousarray(prompt_feat, dtype=np.float32)),
        "prompt_feat_len": torch.tensor([prompt_feat.shape[1]], dtype=torch.int32),
        "embedding": torch.from_numpy(np.ascontiguousarray(embedding, dtype=np.float32)),
    }


def upstream_pre_ode_v1(model, token, prompt, prompt_feat, embedding) -> dict:
    """mu / spks / cond exactly as upstream's `MaskedDiffWithXvec.inference` hands them to its CFM.

    token (1, N) generated tokens; prompt (1, P) prompt tokens; prompt_feat (1, mel_len1, 80); embedding (1, 192)."""
    import torch

    from exporters.graphs.flow_encoder import captured_decoder

    flow = model.flow
    with captured_decoder(flow) as stub:
        flow.inference(**_flow_kwargs(token, prompt, prompt_feat, embedding), flow_cache=torch.zeros(1, 80, 0, 2))
    seen = stub.seen
    if not bool((seen["mask"] == 1).all()) or seen.get("prompt_len", 0) != prompt_feat.shape[1]:
        raise RuntimeError(
            "upstream MaskedDiffWithXvec.inference no longer calls its CFM as this oracle assumes "
            "(all-ones mask, prompt_len = prompt mel frames)"
        )
    return {k: seen[k].numpy().astype(np.float32) for k in ("mu", "spks", "cond")}


def upstream_flow_call(model, token, prompt, prompt_feat, embedding, noise: np.ndarray, cache=None):
    """One upstream `flow.inference` call with `noise` as its randn_like draw; returns (mel, cache) as numpy, cache
    (1, 80, c, 2) with [..., 0] = z and [..., 1] = mu (c = 0: no cache)."""
    import torch

    cache_t = torch.zeros(1, 80, 0, 2) if cache is None else torch.from_numpy(np.ascontiguousarray(cache))
    with injected_noise(lambda i, shape: noise) as calls:
        mel, new_cache = model.flow.inference(**_flow_kwargs(token, prompt, prompt_feat, embedding), flow_cache=cache_t)
    if len(calls) != 1:
        raise RuntimeError(f"upstream flow.inference drew noise {len(calls)} times, expected once")
    return mel.numpy(), new_cache.numpy()


@dataclass
class UpstreamWindowCall:
    start: int  # first generated token of the window
    end: int  # one past its last token
    finalize: bool
    cache_in_frames: int  # flow cache frames the call got (0 on the first call)
    mel: np.ndarray  # (1, 80, mel_len2): flow.inference's output, before token2wav's cross-fade
    cache_out: np.ndarray  # (1, 80, c, 2) the flow cache it returned


def upstream_stream_mels(
    model, tokens, prompt, prompt_feat, embedding, draw: Callable[[int, tuple[int, ...]], np.ndarray]
) -> list[UpstreamWindowCall]:
    """Every flow call of one upstream `CosyVoiceModel.tts(stream=True)` request over `tokens` (1, N), in order,
    with call k's noise = draw(k, shape). The windows are those upstream's own loop cuts."""
    from cosyvoice.cli.model import CosyVoiceModel

    flow = model.flow
    up = CosyVoiceModel(None, flow, SilentHift(int(model.hift.f0_upsamp.scale_factor)))
    calls: list[UpstreamWindowCall] = []
    real_inference = flow.inference
    seen = {"start": 0}

    def inference(**kw):
        n = int(kw["token"].shape[1])
        window = kw["token"][0].numpy()
        start = _locate(tokens[0], window, seen["start"])
        mel, cache = real_inference(**kw)
        cached = int(kw["flow_cache"].shape[2])
        calls.append(UpstreamWindowCall(start, start + n, False, cached, mel.numpy().copy(), cache.numpy().copy()))
        seen["start"] = start
        return mel, cache

    flow.inference = inference
    try:
        with injected_noise(draw):
            drain_tts(up, tokens, prompt, prompt_feat, embedding, stream=True)
    finally:
        del flow.inference  # back to the class method
    calls[-1].finalize = True  # tts ends every request with one finalize=True call
    return calls


def _locate(tokens: np.ndarray, window: np.ndarray, after: int) -> int:
    """Where upstream's window starts in the request's tokens (windows advance monotonically)."""
    for s in range(after, len(tokens) - len(window) + 1):
        if np.array_equal(tokens[s : s + len(window)], window):
            return s
    raise RuntimeError("upstream flow call got tokens that are not a window of the request")
