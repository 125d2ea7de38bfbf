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
# prefix: v2/v3 flow calls recompute the whole prefix; window: CosyVoice 1's fixed hop + overlap windows with a
# flow cache and a mel cross-fade (upstream CosyVoiceModel.tts, notes: upstream-inference 6.2).
STREAM_MODES = ("prefix", "window")


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
    stream: str = "prefix"  # one of STREAM_MODES
    token_rate: int = 0  # tokens per second; 0 = sample_rate / samples_per_mel_frame / token_mel_ratio
    token_overlap_len: int = 0  # window stream: tokens shared by consecutive flow calls
    mel_overlap_len: int = 0  # window stream: mel frames cross-faded between calls
    flow_cache_frames: int = 0  # window stream: noise/mu frames after the prompt carried to the next call
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
                stream=str(cp.get("stream", "prefix")),
                **{k: int(cp.get(k, 0)) for k in WINDOW_FIELDS},
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
        for name in ("stream_scale_factor", "samples_per_mel_frame", "output_chunk_samples"):
            if getattr(self, name) < 1:
                problems.append(f"{name} is {getattr(self, name)}: need >= 1")
        if self.stream not in STREAM_MODES:
            problems.append(f"stream is {self.stream!r}: one of {', '.join(STREAM_MODES)}")
        if self.token_mel_ratio < (0 if self.token_rate else 1):
            problems.append(f"token_mel_ratio is {self.token_mel_ratio}: need >= 1, or 0 with token_rate set")
        if self.stream == "window":
            problems.extend(self._window_problems())
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

    def _window_problems(self) -> list[str]:
        out = []
        if self.pre_lookahead_len:
            out.append(f"window stream with pre_lookahead_len {self.pre_lookahead_len}: the overlap replaces it (0)")
        if not 0 < self.token_overlap_len < self.token_hop_len:
            out.append(f"token_overlap_len {self.token_overlap_len}: need 0 < overlap < token_hop_len")
        if self.mel_overlap_len != self.mel(self.token_overlap_len):
            out.append(
                f"mel_overlap_len {self.mel_overlap_len} != the {self.mel(self.token_overlap_len)} frames of "
                f"{self.token_overlap_len} overlap tokens"
            )
        if self.mel_cache_len > self.mel(self.token_hop_len) - self.mel_overlap_len:
            out.append(f"mel_cache_len {self.mel_cache_len}: more than one hop's emitted frames")
        return out

    def with_overrides(self, overrides: Mapping[str, Any], where: str = "--chunk-policy") -> ChunkPolicy:
        """This policy with the run-time tunable fields replaced (`TUNABLE`: the hop schedule and the output
        chunk; the caches, fades and rates belong to the graphs and stay the pack's), checked like a manifest's."""
        if not isinstance(overrides, Mapping):
            want = f"a JSON object with some of {', '.join(TUNABLE)}"
            raise ToolError(where, f"is a {type(overrides).__name__}", want)
        unknown = sorted(set(overrides) - set(TUNABLE))
        if unknown:
            raise ToolError(
                where,
                f"sets {', '.join(unknown)}, which belong to the pack's graphs",
                f"only the tunable fields {', '.join(TUNABLE)}",
            )
        bad = [k for k, v in overrides.items() if not isinstance(v, int) or isinstance(v, bool)]
        if bad:
            raise ToolError(where, f"{', '.join(bad)} must be integers", 'e.g. {"token_hop_len": 50}')
        from dataclasses import replace

        values: dict[str, Any] = {k: int(v) for k, v in overrides.items()}
        policy = replace(self, **values)
        policy.check(where)
        return policy

    def to_dict(self) -> dict:
        """The manifest's `audio.chunk_policy` object (sample_rate lives in `audio`; the window fields only for
        a window stream, so prefix packs read as before)."""
        d = asdict(self)
        d.pop("sample_rate")
        if self.stream != "window":
            for k in ("stream", *WINDOW_FIELDS):
                d.pop(k)
        return d

    # ---- units -----------------------------------------------------------------------------------------
    @property
    def tokens_per_second(self) -> float:
        if self.token_rate:
            return float(self.token_rate)
        return self.sample_rate / self.samples_per_mel_frame / self.token_mel_ratio

    def tokens(self, seconds: float) -> int:
        return max(1, round(seconds * self.tokens_per_second))

    def mel(self, tokens: int) -> int:
        """Mel frames of `tokens` speech tokens. Without an integer ratio (CosyVoice 1), upstream's exact rule
        int(N / token_rate * 22050 / 256) in Python float arithmetic (MaskedDiffWithXvec.inference)."""
        if self.token_mel_ratio:
            return self.token_mel_ratio * tokens
        return int(tokens / self.token_rate * self.sample_rate / self.samples_per_mel_frame)

    # ---- the stream schedule -----------------------------------------------------------------------------
    def prompt_pad(self, prompt_tokens: int) -> int:
        if self.stream == "window":  # windows are not aligned to attention chunks
            return 0
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
        typical steady-state flow call (window stream: prompt + one window of the max hop + overlap)."""
        if self.stream == "window":
            return prompt_tokens + self.token_max_hop_len + self.token_overlap_len
        hops: list[int] = []
        while not hops or (hops[-1] < self.token_max_hop_len and len(hops) < 64):
            hops = self.hops(prompt_tokens, len(hops) + 1)
        return prompt_tokens + sum(hops)

    @property
    def carried_tokens(self) -> int:
        """Tokens a non-final call reads past its hop: the lookahead (prefix) or the overlap (window)."""
        return self.token_overlap_len if self.stream == "window" else self.pre_lookahead_len

    @property
    def first_hop_max(self) -> int:
        """Largest first hop: token_hop_len plus the largest prompt pad."""
        return self.token_hop_len if self.stream == "window" else 2 * self.token_hop_len - 1

    @property
    def final_only_max_tokens(self) -> int:
        """A stream whose LLM stops before the first hop completes makes only the final call, on fewer than
        first hop + lookahead (or overlap) generated tokens."""
        return self.first_hop_max + self.carried_tokens - 1

    @property
    def final_after_chunks_tokens(self) -> tuple[int, int]:
        """New tokens of a final call that follows non-final calls (window stream: tokens of its window): at
        least the lookahead (overlap) that the last call did not emit, fewer than the next (max) hop + it."""
        return self.carried_tokens, self.token_max_hop_len + self.carried_tokens - 1

    def schedule(self, prompt_tokens: int) -> TokenHopSchedule:
        if self.stream == "window":
            return WindowSchedule(self, prompt_tokens)
        return TokenHopSchedule(self, prompt_tokens)

    def describe(self) -> str:
        """One line for logs: the streaming schedule a run uses."""
        if self.stream == "window":
            return (
                f"streaming schedule: windows of {self.token_hop_len} + {self.token_overlap_len} overlap tokens "
                f"(x{self.stream_scale_factor} up to {self.token_max_hop_len}), flow cache prompt + "
                f"{self.flow_cache_frames} frames, mel cross-fade {self.mel_overlap_len} frames, mel cache "
                f"{self.mel_cache_len} frames, source cache {self.source_cache_len} samples, {self.crossfade.window} "
                f"cross-fade {self.crossfade.length}, output chunks {self.output_chunk_samples} samples at "
                f"{self.sample_rate} Hz, hop growth {self.hop_growth}"
            )
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
    for key in (*INT_FIELDS, *WINDOW_FIELDS, "sample_rate"):
        if key in spec.facts and int(spec.facts[key]) != getattr(policy, key):
            raise ToolError(
                f"{spec.graph} I/O spec",
                f"fact {key} is {spec.facts[key]}",
                f"equal to audio.chunk_policy.{key} ({getattr(policy, key)}); re-export the pack",
            )


# What a run may change (tts-run --chunk-policy FILE): when audio is emitted, not how the graphs see it.
TUNABLE = ("token_hop_len", "token_max_hop_len", "stream_scale_factor", "output_chunk_samples")
WINDOW_FIELDS = ("token_rate", "token_overlap_len", "mel_overlap_len", "flow_cache_frames")
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
    end: int  # generated tokens passed to the flow: token[start:end] (lookahead included when not final)
    token_offset: int  # generated tokens already emitted: their mel frames are sliced off (prefix stream)
    streaming: bool
    finalize: bool
    start: int = 0  # window stream: the window's first token (== token_offset; the flow sees only the window)


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


class WindowSchedule(TokenHopSchedule):
    """Upstream CosyVoiceModel.tts (CosyVoice 1): once `hop + overlap` tokens are queued, the flow runs on that
    window (plus the prompt); then the first `hop` tokens are dropped and the overlap kept; the hop grows by
    stream_scale_factor up to token_max_hop_len (upstream: x1, 100 tokens forever). When the LLM is done, one
    final call takes every remaining token."""

    def __init__(self, policy: ChunkPolicy, prompt_tokens: int):
        super().__init__(policy, prompt_tokens)
        self.prompt_pad = 0

    def next_call(self, available: int) -> FlowCall | None:
        hop, overlap = self.hop, self.policy.token_overlap_len
        if available - self.token_offset < hop + overlap:
            return None
        start = self.token_offset
        call = FlowCall(start + hop + overlap, start, streaming=True, finalize=False, start=start)
        self.token_offset += hop
        self.hop = min(self.policy.token_max_hop_len, int(self.hop * self.policy.stream_scale_factor))
        return call

    def final_call(self, total: int) -> FlowCall:
        return FlowCall(total, self.token_offset, streaming=False, finalize=True, start=self.token_offset)
