"""When to call the flow during a stream: upstream CosyVoice2Model.tts's token hop schedule.

A non-final call needs `hop + pre_lookahead_len` tokens past the emitted offset; the first hop is padded
so that prompt + first hop ends on a multiple of `token_hop_len` (the attention chunk); after each call
the hop is multiplied by `stream_scale_factor` up to `token_max_hop_len` (25+pad, 50, 100, 100, ...).
When the LLM has finished, one final call on every token (finalize=true, streaming=false) emits the
rest. Upstream keeps the grown hop on its model object across requests; this schedule is per request
(see the pack's `audio.chunk_policy.hop_growth`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FlowCall:
    end: int  # generated tokens passed to the flow: token[:end] (lookahead included when not final)
    token_offset: int  # generated tokens already emitted: their mel frames are sliced off
    streaming: bool
    finalize: bool


class TokenHopSchedule:
    """Per-request state of upstream's streaming loop, driven by the number of tokens available."""

    def __init__(self, chunk_policy: dict, prompt_tokens: int):
        self.hop = int(chunk_policy["token_hop_len"])
        self.max_hop = int(chunk_policy["token_max_hop_len"])
        self.scale = int(chunk_policy["stream_scale_factor"])
        self.lookahead = int(chunk_policy["pre_lookahead_len"])
        self.prompt_pad = -int(prompt_tokens) % self.hop  # ceil(P / hop) * hop - P
        self.token_offset = 0

    @property
    def this_hop(self) -> int:
        return self.hop + self.prompt_pad if self.token_offset == 0 else self.hop

    def next_call(self, available: int) -> FlowCall | None:
        """The next non-final call if `available` generated tokens suffice, else None."""
        hop = self.this_hop
        if available - self.token_offset < hop + self.lookahead:
            return None
        call = FlowCall(self.token_offset + hop + self.lookahead, self.token_offset, streaming=True, finalize=False)
        self.token_offset += hop
        self.hop = min(self.max_hop, self.hop * self.scale)
        return call

    def final_call(self, total: int) -> FlowCall:
        """The last call once the LLM is done: every token, no lookahead, full attention."""
        return FlowCall(total, self.token_offset, streaming=False, finalize=True)

    def plan(self, total: int) -> list[FlowCall]:
        """Every call for `total` generated tokens when all are available up front (LLM already done)."""
        calls = []
        while (call := self.next_call(total)) is not None:
            calls.append(call)
        return calls + [self.final_call(total)]
