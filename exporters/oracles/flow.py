"""Upstream token -> mel references for flow parity checks (tests and ci/), computed by upstream's own loop.

`upstream_token2mel` runs upstream `CosyVoice2Model.tts` on given speech tokens (its voice-conversion
path feeds the tokens, so no LLM runs) with `stream` on or off, and records every flow call its
`token2wav` makes: the call's arguments and the mel that token2wav hands on (flow output sliced by
`token_offset`). HiFT is replaced by a stub returning silence, since only the mel is compared. The
upstream flow (encoder + ODE over the PyTorch estimator) runs unchanged.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from specs.io_spec import Tolerance

# Runtime token -> mel (flow.encoder + 10 Euler steps over flow.decoder.estimator on ONNX Runtime) vs
# upstream PyTorch, per output chunk. Set from measurements (see the tests and ci/check_flow_full.py).
TOKEN2MEL_TOLERANCE = Tolerance(
    atol=2e-4,
    rtol=1e-4,
    reason="the ODE sums 10 estimator velocity errors (fp32 reassociation, <= 7e-6 each at full size) "
    "weighted by the CFG factors 1.7 and 0.7 over dt summing to 1, plus the mu error it is "
    "conditioned on; measured <= 1.8e-5 tiny and <= 1.0e-5 full (|mel| up to ~6). 10x headroom; a "
    "wrong chunk mask, CFG rate, step count or noise slice moves the mel by >= 0.19 (tiny)",
)

# The same chain for CosyVoice3 (flow.prep + 10 Euler steps over the DiT flow.decoder.estimator, ORT vs
# upstream CausalMaskedDiffWithDiT.inference), per flow call. Set from tests/test_v3_flow.py.
TOKEN2MEL_TOLERANCE_V3 = Tolerance(
    atol=2e-4,
    rtol=1e-4,
    reason="10 DiT velocity errors (fp32 reassociation, <= 9.6e-7 each, tiny) weighted by the CFG factors 1.7 "
    "and 0.7 over dt summing to 1, plus the prep's mu error (<= 5.1e-7); measured <= 1.4e-6 tiny on a "
    "streaming chunk and a final call (|mel| up to ~5.5), not yet at full size (22 blocks: the v2 budget's "
    "headroom). The other attention mask moves the mel by >= 0.11 (tiny)",
)


@dataclass
class UpstreamFlowCall:
    end: int  # generated tokens passed to flow.inference (lookahead included when not final)
    token_offset: int
    streaming: bool
    finalize: bool
    mel: np.ndarray  # (1, mel, frames) that token2wav keeps: flow output[:, :, token_offset * ratio:]


class SilentHift:
    """Stands in for HiFT in token2wav: silence of the right length, so only the flow runs."""

    def __init__(self, samples_per_frame: int):
        self.samples_per_frame = samples_per_frame

    def inference(self, speech_feat, cache_source=None):
        import torch

        n = speech_feat.shape[2] * self.samples_per_frame
        return torch.zeros(1, n), torch.zeros(1, 1, n)


def i32(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).to(torch.int32)


def drain_tts(
    up, tokens: np.ndarray, prompt_tokens: np.ndarray, prompt_feat: np.ndarray, embedding: np.ndarray, stream: bool
):
    """Run one upstream `tts` request (CosyVoiceModel / CosyVoice2Model) to its end on given speech tokens: its
    voice-conversion path, so no LLM runs."""
    import torch

    for _ in up.tts(
        flow_embedding=torch.from_numpy(embedding),
        flow_prompt_speech_token=i32(prompt_tokens),
        prompt_speech_feat=torch.from_numpy(prompt_feat),
        source_speech_token=i32(tokens),
        stream=stream,
    ):
        pass


@contextlib.contextmanager
def _recording(up, flow, calls: list):
    """Record token2wav's arguments and flow.inference's output on one CosyVoice2Model instance."""
    real_token2wav, real_inference = up.token2wav, flow.inference
    last = {}

    def inference(**kwargs):
        mel, cache = real_inference(**kwargs)
        last["mel"] = mel
        return mel, cache

    def token2wav(
        token, prompt_token, prompt_feat, embedding, token_offset, uuid, stream=False, finalize=False, speed=1.0
    ):
        speech = real_token2wav(
            token,
            prompt_token,
            prompt_feat,
            embedding,
            token_offset,
            uuid,
            stream=stream,
            finalize=finalize,
            speed=speed,
        )
        mel = last.pop("mel")[:, :, token_offset * flow.token_mel_ratio :]  # as token2wav slices it
        calls.append(
            UpstreamFlowCall(
                int(token.shape[1]), int(token_offset), bool(stream), bool(finalize), mel.float().numpy().copy()
            )
        )
        return speech

    up.token2wav = token2wav
    flow.inference = inference
    try:
        yield
    finally:
        del flow.inference  # back to the class method
        up.token2wav = real_token2wav


def upstream_token2mel(
    model, tokens: np.ndarray, prompt_tokens: np.ndarray, prompt_feat: np.ndarray, embedding: np.ndarray, stream: bool
) -> list[UpstreamFlowCall]:
    """Every flow call of one upstream `CosyVoice2Model.tts` request over `tokens` (1, N), in order.

    prompt_tokens (1, P) and prompt_feat (1, 2P, 80) are the flow prompt; embedding (1, 192)."""
    from cosyvoice.cli.model import CosyVoice2Model

    up = CosyVoice2Model(None, model.flow, SilentHift(int(model.hift.f0_upsamp.scale_factor)))
    calls: list[UpstreamFlowCall] = []
    with _recording(up, model.flow, calls):
        drain_tts(up, tokens, prompt_tokens, prompt_feat, embedding, stream)
    return calls


def upstream_flow_mel(flow, gen, n_tokens: int = 60):
    """A mel the vocoder will really see: the upstream flow's offline output for random tokens (HiFT test
    inputs and random-bundle calibration)."""
    import torch

    with torch.no_grad():
        tokens = torch.randint(0, flow.vocab_size, (1, n_tokens), generator=gen, dtype=torch.int32)
        mel, _ = flow.inference(
            token=tokens,
            token_len=torch.tensor([n_tokens], dtype=torch.int32),
            prompt_token=torch.zeros(1, 0, dtype=torch.int32),
            prompt_token_len=torch.tensor([0], dtype=torch.int32),
            prompt_feat=torch.zeros(1, 0, 80),
            prompt_feat_len=torch.tensor([0], dtype=torch.int32),
            embedding=torch.randn(1, 192, generator=gen),
            streaming=False,
            finalize=True,
        )
    return mel
