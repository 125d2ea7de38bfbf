"""Per-graph knowledge of what each dynamic dim means, turned into profile ranges per chunk policy.

A rule finds its dims by role (tensor + axis, e.g. the estimator's frames = axis 2 of `x`), not by dim
name, and returns one `ProfileDraft` per optimisation profile. Dims a rule does not mention keep the
spec's declared min/opt/max; dims a rule cannot find (a renamed tensor) fall back the same way, with a
note. Zero-length dims are pinned in profiles of their own here where the rule knows the call (HiFT's
first chunk, the LLM's prefill, the flow encoder without prompt); trt/profiles.py does the same
generically for any other dim whose range starts at 0.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

from specs.io_spec import GraphSpec
from trt.policy import ANY_CHUNK, CHUNKS, TYPICAL_TEXT_TOKENS, ChunkPolicy
from trt.ranges import DimRange, ProfileDraft

# LLM caps: TensorRT sizes activation memory for the max shapes of every profile (prefill attention
# scores alone are heads * seq * total * 4 bytes: 60 GB at Qwen2's 32768 positions). A CosyVoice2 segment
# needs sos + text + task + prompt speech (<= 30 s = 750 tokens) + generated (<= 20 x text tokens; the
# frontend splits text into short segments), well under these. Raise with --max-dim if needed.
LLM_MAX_POSITIONS = 4096
LLM_MAX_PREFILL = 1024
# Profiles are boxes, so total = past + new must hold at each corner: the decode profile takes up to this
# many new positions per call (bistream appends mix_ratio = 5 text + 15 speech); longer extensions of a
# non-empty cache fit no profile and run on ONNX Runtime.
LLM_DECODE_MAX_NEW = 64


@dataclass(frozen=True)
class GraphRule:
    chunks: tuple[str, ...]
    derive: Callable[[GraphSpec, ChunkPolicy, str, Mapping[str, int]], list[ProfileDraft]]
    doc: str


def dim_at(spec: GraphSpec, tensor: str, axis: int) -> str | None:
    """The named dim at `axis` of input `tensor`, or None if there is no such input or the axis is fixed."""
    for t in spec.inputs:
        if t.name == tensor and axis < len(t.shape) and isinstance(t.shape[axis], str):
            return t.shape[axis]
    return None


def dim_matching(spec: GraphSpec, pattern: str, axis: int) -> str | None:
    for t in spec.inputs:
        if re.fullmatch(pattern, t.name):
            return dim_at(spec, t.name, axis)
    return None


def _keep(d: dict, name: str | None, rng: DimRange) -> None:
    if name is not None:
        d[name] = rng


# ---- flow.decoder.estimator ------------------------------------------------------------------------------
def estimator_profiles(spec: GraphSpec, p: ChunkPolicy, chunk: str, caps: Mapping[str, int]) -> list[ProfileDraft]:
    frames = dim_at(spec, "x", 2)
    top = spec.dims[frames].max if frames else 0
    pt, nt = p.typical_prompt_tokens, p.typical_utterance_tokens
    if chunk == "stream":
        opt = p.mel(p.steady_prefix_tokens(pt))
        why = (f"min: final-only call of a 1-token stream without prompt; opt: first max-hop call after a "
               f"{pt}-token prompt ({p.steady_prefix_tokens(pt)} tokens); max: the graph's max (prompt + "
               "everything generated, recomputed on every call)")
    else:
        opt = p.mel(pt + nt)
        why = f"min: a 1-token utterance; opt: {pt}-token prompt + {nt} generated tokens; max: the graph's max"
    d: dict[str, DimRange] = {}
    _keep(d, frames, DimRange(p.mel(1), opt, top, why))
    return [ProfileDraft("all_calls", d, "every flow call of the policy: one CFG batch of 2, whole prefix")]


# ---- hift ---------------------------------------------------------------------------------------------------
def hift_profiles(spec: GraphSpec, p: ChunkPolicy, chunk: str, caps: Mapping[str, int]) -> list[ProfileDraft]:
    frames, cache = dim_at(spec, "mel", 2), dim_at(spec, "cache_source", 2)
    top = spec.dims[frames].max if frames else 0
    first: dict[str, DimRange] = {}
    _keep(first, cache, DimRange.pinned(0, "no source cache before the first call (zero-length input)"))
    if chunk == "offline":
        _keep(first, frames, DimRange(p.mel(1), p.mel(p.typical_utterance_tokens), top,
                                      "one call on the whole utterance's mel (no cache)"))
        return [ProfileDraft("utterance", first, "offline: one call, zero-length cache_source")]
    first_hi = p.mel(p.final_only_max_tokens)
    _keep(first, frames, DimRange(p.mel(1), p.mel(p.token_hop_len + p.prompt_pad(p.typical_prompt_tokens)),
                                  first_hi, f"first call: {p.token_mel_ratio} x (hop + prompt pad) frames, or a "
                                  f"final-only call of 1..{p.final_only_max_tokens} tokens"))
    lo_new, hi_new = p.final_after_chunks_tokens
    later: dict[str, DimRange] = {}
    _keep(later, cache, DimRange(1, p.source_cache_len, p.source_cache_len,
                                 f"the previous call's last {p.source_cache_len} source samples"))
    _keep(later, frames, DimRange(p.mel_cache_len + p.mel(lo_new), p.mel_cache_len + p.mel(p.token_max_hop_len),
                                  p.mel_cache_len + p.mel(hi_new),
                                  f"{p.mel_cache_len} cached frames + {p.token_mel_ratio} x new tokens "
                                  f"({lo_new}..{hi_new} on the final call, {p.token_max_hop_len} steady)"))
    return [ProfileDraft("first_chunk", first, "first call of a stream (or its only, final, call)"),
            ProfileDraft("later_chunks", later, "every call after the first: cached mel + source")]


# ---- flow.encoder -------------------------------------------------------------------------------------------
def encoder_profiles(spec: GraphSpec, p: ChunkPolicy, chunk: str, caps: Mapping[str, int]) -> list[ProfileDraft]:
    tokens, prompt = dim_at(spec, "token", 1), dim_at(spec, "prompt_feat", 1)
    t_top = spec.dims[tokens].max if tokens else 0
    p_top = spec.dims[prompt].max if prompt else 0
    pt, nt = p.typical_prompt_tokens, p.typical_utterance_tokens

    def token_range(prompt_tokens: int) -> DimRange:
        if chunk == "stream":
            return DimRange(1, p.steady_prefix_tokens(prompt_tokens), t_top,
                            "prefix without lookahead; opt: the first max-hop call")
        return DimRange(1, prompt_tokens + nt, t_top, "the whole utterance (+ prompt) in one call")

    bare: dict[str, DimRange] = {}
    _keep(bare, prompt, DimRange.pinned(0, "no prompt: zero-length prompt_feat"))
    _keep(bare, tokens, token_range(0))
    with_prompt: dict[str, DimRange] = {}
    _keep(with_prompt, prompt, DimRange(1, p.mel(pt), p_top, f"prompt mel; opt: a {pt}-token prompt"))
    _keep(with_prompt, tokens, token_range(pt))
    return [ProfileDraft("no_prompt", bare, "calls without a prompt"),
            ProfileDraft("with_prompt", with_prompt, "zero-shot calls (prompt mel present)")]


# ---- llm -------------------------------------------------------------------------------------------------------
def llm_profiles(spec: GraphSpec, p: ChunkPolicy, chunk: str, caps: Mapping[str, int]) -> list[ProfileDraft]:
    seq = dim_at(spec, "inputs_embeds", 1)
    past = dim_matching(spec, r"past_key_values\.\d+\.key", 2)
    total = next((d for t in spec.inputs if "mask" in t.name for d in t.dim_names()
                  if d not in (seq, past) and not spec.dims[d].derived_from), None)
    prefill_max = min(caps.get(seq, LLM_MAX_PREFILL), spec.dims[seq].max if seq else LLM_MAX_PREFILL)
    new_max = min(LLM_DECODE_MAX_NEW, prefill_max)
    # --max-dim on either past or total moves both, keeping total = past + new at the max corner
    positions = caps.get(total) or (caps[past] + new_max if past in caps else LLM_MAX_POSITIONS)
    positions = min(positions, spec.dims[total].max if total else positions)
    prefill_opt = 2 + TYPICAL_TEXT_TOKENS + p.typical_prompt_tokens  # sos + text + task_id + prompt speech
    cap_why = f"capped at {positions} positions / {prefill_max} prefill positions (trt/graph_rules.py)"
    pre: dict[str, DimRange] = {}
    _keep(pre, past, DimRange.pinned(0, "prefill: zero-length KV cache"))
    _keep(pre, seq, DimRange(1, prefill_opt, prefill_max, f"lm_input; opt: sos + {TYPICAL_TEXT_TOKENS} text + "
                             f"task + {p.typical_prompt_tokens} prompt speech tokens; {cap_why}"))
    _keep(pre, total, DimRange(1, prefill_opt, prefill_max, "= sequence length (no past)"))
    dec: dict[str, DimRange] = {}
    past_opt = prefill_opt + p.typical_utterance_tokens // 2
    _keep(dec, past, DimRange(1, past_opt, positions - new_max, f"cached positions; opt: mid-utterance; {cap_why}"))
    _keep(dec, seq, DimRange(1, 1, new_max, f"one token per decode step; bistream appends mix_ratio chunks "
                             f"(<= {new_max})"))
    _keep(dec, total, DimRange(2, past_opt + 1, positions, "= past + sequence length at min, opt and max"))
    return [ProfileDraft("prefill", pre, "first call: the whole lm_input, empty cache"),
            ProfileDraft("decode", dec, "every later call: cache + new positions")]


RULES: dict[str, GraphRule] = {
    "flow.decoder.estimator": GraphRule(CHUNKS, estimator_profiles, "CFM estimator, whole prefix per call"),
    "hift": GraphRule(CHUNKS, hift_profiles, "HiFT vocoder with mel + source caches"),
    "flow.encoder": GraphRule(CHUNKS, encoder_profiles, "flow encoder, whole prefix per call"),
    "llm": GraphRule((ANY_CHUNK,), llm_profiles, "LLM step: prefill / decode over a KV cache"),
}
# Short names accepted by --graphs.
ALIASES = {"estimator": "flow.decoder.estimator", "encoder": "flow.encoder"}


def rule_for(graph: str) -> GraphRule | None:
    return RULES.get(graph)
