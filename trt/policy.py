"""The pack's chunk policy (manifest `audio.chunk_policy`) as numbers that TensorRT profiles are made of.

Upstream CosyVoice2Model's stream (notes: upstream-inference 6.3): the flow recomputes the whole prefix
(prompt + generated tokens) on every call; a non-final call needs `hop + pre_lookahead_len` tokens past
the emitted offset; the first hop is padded so prompt + first hop is a multiple of `token_hop_len`; hops
then grow by `stream_scale_factor` up to `token_max_hop_len` (25+pad, 50, 100, 100, ...); when the LLM
is done one final call (finalize, full attention) takes every token. HiFT gets the new mel frames plus
`mel_cache_len` cached frames, and `source_cache_len` cached source samples (none on the first call).

Typical-use constants set the `opt` shapes only (what TensorRT tunes kernels for); min/max come from
the schedule and the graph's declared ranges, so a wrong guess here costs speed, never correctness.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from specs.errors import ToolError

CHUNKS = ("stream", "offline")
ANY_CHUNK = "any"  # graphs whose calls do not depend on the chunk policy (the LLM) get one engine

TYPICAL_PROMPT_SECONDS = 3.0  # zero-shot prompt length TensorRT tunes for
TYPICAL_UTTERANCE_SECONDS = 10.0  # generated speech per text segment
TYPICAL_TEXT_TOKENS = 50  # prompt text + target text of such a segment (Qwen2 BPE ids)

REQUIRED = ("token_hop_len", "token_max_hop_len", "stream_scale_factor", "pre_lookahead_len",
            "token_mel_ratio", "mel_cache_len", "source_cache_len", "samples_per_mel_frame")


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
    sample_rate: int = 24000

    @classmethod
    def from_manifest(cls, audio: Mapping, where: str = "manifest.json") -> "ChunkPolicy":
        cp = audio.get("chunk_policy", {})
        missing = [k for k in REQUIRED if not isinstance(cp.get(k), int) or cp[k] < 0]
        if missing:
            raise ToolError(where, f"audio.chunk_policy lacks non-negative integers {missing}",
                            "a pack written by tts-export (exporters/pack_export.py chunk_policy())")
        p = cls(**{k: int(cp[k]) for k in REQUIRED}, sample_rate=int(audio.get("sample_rate", 24000)))
        if p.token_hop_len < 1 or p.token_mel_ratio < 1 or p.token_max_hop_len < p.token_hop_len:
            raise ToolError(where, f"audio.chunk_policy has token_hop_len {p.token_hop_len}, token_max_hop_len "
                            f"{p.token_max_hop_len}, token_mel_ratio {p.token_mel_ratio}",
                            "1 <= token_hop_len <= token_max_hop_len and token_mel_ratio >= 1")
        return p

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in REQUIRED + ("sample_rate",)}

    # ---- units -----------------------------------------------------------------------------------------
    @property
    def tokens_per_second(self) -> float:
        return self.sample_rate / self.samples_per_mel_frame / self.token_mel_ratio

    def tokens(self, seconds: float) -> int:
        return max(1, round(seconds * self.tokens_per_second))

    def mel(self, tokens: int) -> int:
        return self.token_mel_ratio * tokens

    @property
    def typical_prompt_tokens(self) -> int:
        return self.tokens(TYPICAL_PROMPT_SECONDS)

    @property
    def typical_utterance_tokens(self) -> int:
        return self.tokens(TYPICAL_UTTERANCE_SECONDS)

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
