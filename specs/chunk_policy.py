"""The pack's chunk policy (manifest `audio.chunk_policy`) as one typed object, and the one hop schedule.

Upstream CosyVoice2Model's stream (notes: upstream-inference 6.3): the flow recomputes the whole prefix
(prompt + generated tokens) on every call; a non-final call needs `hop + pre_lookahead_len` tokens past
the emitted offset; the first hop is padded so prompt + first hop is a multiple of `token_hop_len` (the
attention chunk); hops then grow by `stream_scale_factor` up to `token_max_hop_len` (25+pad, 50, 100, ...);
when the LLM is done one final call (finalize, full attention) takes every token. HiFT gets the new mel
frames plus `mel_cache_len` cached frames and `source_cache_len` cached source samples (none on the first
call). Upstream keeps the grown hop on its model object across requests; here the hop restarts per
request (`hop_growth: per_request`).

The manifest schema types every field; `ChunkPolicy.from_manifest` adds the cross-field rules, once, in
`Pack.open`. Everything else (runtime stages, TensorRT planning, oracles) reads this object, never the dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from specs.errors import ToolError

CHUNK_MODES = ("stream", "offline")  # how a graph is called: upstream's streaming loop, or one call per utterance
ANY_CHUNK = "any"  # graphs whose calls do not depend on the chunk mode (the LLM)
HOP_GROWTH = ("per_request",)
# cached: v2 HiFT calls get cached mel frames + source samples, chunks cross-faded; recompute: v3's causal HiFT
# re-runs over all mel so far and only new samples are emitted (no caches, no cross-fade).
VOCODER_MODES = ("cached", "recompute")


@dataclass(frozen=True)
class Crossfade:
    window: str  # "hamming" (upstream's speech_window)
    length: int  # samples of the whole window; the fade uses its two halves


@dataclass(frozen=True)
class ChunkPolicy:
    token_hop_len: int
    token_max_hop_len: int
    stream_scale_factor: int
    pre_lookahead_len: int
    token_mel_ratio: int
    mel_cache_len: int
    source_cache_len: int
    samples_per_mel_frame: int
    output_chunk_samples: int  # fixed PCM chunk of tts-run / TtsSession (the last one may be shorter)
    crossfade: Crossfade
    hop_growth: str = "per_request"
    vocoder: str = "cached"  # one of VOCODER_MODES
    sample_rate: int = 24000  # manifest audio.sample_rate (not part of the chunk_policy object)

    @classmethod
    def from_dict(cls, cp: Mapping[str, Any], sample_rate: int, where: str = "manifest.json") -> ChunkPolicy:
        try:
            fade = cp["crossfade"]
            policy = cls(
                **{k: int(cp[k]) for k in INT_FIELDS},
                crossfade=Crossfade(str(fade["window"]), int(fade["length"])),
                hop_growth=str(cp.get("hop_growth", "per_request")),
                vocoder=str(cp.get("vocoder", "cached")),
                sample_rate=int(sample_rate),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ToolError(
                where,
                f"audio.chunk_policy is incomplete ({type(e).__name__}: {e})",
                f"integers {', '.join(INT_FIELDS)} and crossfade {{window, length}} (a pack written by tts-export)",
            ) from None
        policy.check(where)
        return policy

    @classmethod
    def from_manifest(cls, audio: Mapping[str, Any], where: str = "manifest.json") -> ChunkPolicy:
        return cls.from_dict(audio.get("chunk_policy", {}), audio.get("sample_rate", 0), where)

    def check(self, where: str) -> None:
        """Rules between fields (the schema checks each field's type and range)."""
        problems = []
        if not 1 <= self.token_hop_len <= self.token_max_hop_len:
            problems.append(
                f"token_hop_len {self.token_hop_len} / token_max_hop_len {self.token_max_hop_len}: "
                "need 1 <= token_hop_len <= token_max_hop_len"
            )
        for name in ("stream_scale_factor", "token_mel_ratio", "samples_per_mel_frame", "output_chunk_samples"):
            if getattr(self, name) < 1:
                problems.append(f"{name} is {getattr(self, name)}: need >= 1")
        if self.source_cache_len != self.mel_cache_len * self.samples_per_mel_frame:
            problems.append(
                f"source_cache_len {self.source_cache_len} != mel_cache_len {self.mel_cache_len} x "
                f"samples_per_mel_frame {self.samples_per_mel_frame}"
            )
        if self.crossfade.length // 2 > self.source_cache_len:
            problems.append(
                f"crossfade.length {self.crossfade.length}: its half must fit the held-back "
                f"{self.source_cache_len} samples"
            )
        if self.vocoder not in VOCODER_MODES:
            problems.append(f"vocoder is {self.vocoder!r}: one of {', '.join(VOCODER_MODES)}")
        if self.vocoder == "recompute" and (self.mel_cache_len or self.crossfade.length):
            problems.append(
                f"vocoder recompute with mel_cache_len {self.mel_cache_len} / crossfade.length "
                f"{self.crossfade.length}: a recomputing vocoder has no caches and no cross-fade (both 0)"
            )
        if self.hop_growth not in HOP_GROWTH:
            problems.append(f"hop_growth is {self.hop_growth!r}: one of {', '.join(HOP_GROWTH)}")
        if self.sample_rate < 8000:
            problems.append(f"sample_rate is {self.sample_rate}: need >= 8000")
        if problems:
            raise ToolError(where, "audio.chunk_policy: " + "; ".join(problems), "a pack written by tts-export")

    def to_dict(self) -> dict:
        """The manifest's `audio.chunk_policy` object (sample_rate lives in `audio`)."""
        d = asdict(self)
        d.pop("sample_rate")
        return d

    # ---- units -----------------------------------------------------------------------------------------
    @property
    def tokens_per_second(self) -> float:
        return self.sample_rate / self.samples_per_mel_frame / self.token_mel_ratio

    def tokens(self, seconds: float) -> int:
        return max(1, round(seconds * self.tokens_per_second))

    def mel(self, tokens: int) -> int:
        return self.token_mel_ratio * tokens

    # ---- the stream schedule -----------------------------------------------------------------------------
    def prompt_pad(self, prompt_tokens: int) -> int:
        return -prompt_tokens % self.token_hop_len

    def hops(self, prompt_tokens: int, n: int) -> list[int]:
        """The first `n` non-final hops (generated tokens emitted per call) of a stream."""
        out, hop = [], self.token_hop_len
        for k in range(n):
            out.append(hop + self.prompt_pad(prompt_tokens) if k == 0 else hop)
            hop = min(self.token_max_hop_len, hop * self.stream_scale_factor)
        return out

    def steady_prefix_tokens(self, prompt_tokens: int) -> int:
        """Prompt + generated tokens (lookahead excluded) of the first call whose hop is the max hop: the
        typical steady-state flow call."""
        hops: list[int] = []
        while not hops or (hops[-1] < self.token_max_hop_len and len(hops) < 64):
            hops = self.hops(prompt_tokens, len(hops) + 1)
        return prompt_tokens + sum(hops)

    @property
    def first_hop_max(self) -> int:
        """Largest first hop: token_hop_len plus the largest prompt pad."""
        return 2 * self.token_hop_len - 1

    @property
    def final_only_max_tokens(self) -> int:
        """A stream whose LLM stops before the first hop completes makes only the final call, on fewer than
        first hop + lookahead generated tokens."""
        return self.first_hop_max + self.pre_lookahead_len - 1

    @property
    def final_after_chunks_tokens(self) -> tuple[int, int]:
        """New tokens of a final call that follows non-final calls: at least the lookahead that the last
        call did not emit, fewer than the next (max) hop + lookahead."""
        return self.pre_lookahead_len, self.token_max_hop_len + self.pre_lookahead_len - 1

    def schedule(self, prompt_tokens: int) -> TokenHopSchedule:
        return TokenHopSchedule(self, prompt_tokens)

    def describe(self) -> str:
        """One line for logs: the streaming schedule a run uses."""
        vocoder = (
            "vocoder recomputed over all mel, new samples emitted (no cache, no cross-fade)"
            if self.vocoder == "recompute"
            else f"mel cache {self.mel_cache_len} frames, source cache {self.source_cache_len} samples, "
            f"{self.crossfade.window} cross-fade {self.crossfade.length}"
        )
        return (
            f"streaming schedule: token hop {self.token_hop_len} (+ prompt pad on the first chunk) x"
            f"{self.stream_scale_factor} up to {self.token_max_hop_len}, pre-lookahead {self.pre_lookahead_len}, "
            f"{vocoder}, output chunks {self.output_chunk_samples} samples at {self.sample_rate} Hz, "
            f"hop growth {self.hop_growth}"
        )


def check_policy_facts(policy: ChunkPolicy, spec) -> None:
    """Graph facts that repeat a chunk-policy field (e.g. HiFT's mel_cache_len) must equal it: checked in this
    one place, at export and by tts-validate; the runtime then reads the policy only."""
    for key in (*INT_FIELDS, "sample_rate"):
        if key in spec.facts and int(spec.facts[key]) != getattr(policy, key):
            raise ToolError(
                f"{spec.graph} I/O spec",
                f"fact {key} is {spec.facts[key]}",
                f"equal to audio.chunk_policy.{key} ({getattr(policy, key)}); re-export the pack",
            )


INT_FIELDS = (
    "token_hop_len",
    "token_max_hop_len",
    "stream_scale_factor",
    "pre_lookahead_len",
    "token_mel_ratio",
    "mel_cache_len",
    "source_cache_len",
    "samples_per_mel_frame",
    "output_chunk_samples",
)


@dataclass(frozen=True)
class FlowCall:
    end: int  # generated tokens passed to the flow: token[:end] (lookahead included when not final)
    token_offset: int  # generated tokens already emitted: their mel frames are sliced off
    streaming: bool
    finalize: bool


class TokenHopSchedule:
    """Per-request state of upstream's streaming loop, driven by the number of tokens available."""

    def __init__(self, policy: ChunkPolicy, prompt_tokens: int):
        self.policy = policy
        self.hop = policy.token_hop_len
        self.prompt_pad = policy.prompt_pad(int(prompt_tokens))
        self.token_offset = 0

    @property
    def this_hop(self) -> int:
        return self.hop + self.prompt_pad if self.token_offset == 0 else self.hop

    def next_call(self, available: int) -> FlowCall | None:
        """The next non-final call if `available` generated tokens suffice, else None."""
        hop, look = self.this_hop, self.policy.pre_lookahead_len
        if available - self.token_offset < hop + look:
            return None
        call = FlowCall(self.token_offset + hop + look, self.token_offset, streaming=True, finalize=False)
        self.token_offset += hop
        self.hop = min(self.policy.token_max_hop_len, self.hop * self.policy.stream_scale_factor)
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

    def hops(self, total: int) -> list[int]:
        """Tokens emitted per call (the final call's included) for `total` generated tokens."""
        calls = self.plan(total)
        return [
            (calls[i + 1].token_offset if i + 1 < len(calls) else total) - c.token_offset for i, c in enumerate(calls)
        ]
