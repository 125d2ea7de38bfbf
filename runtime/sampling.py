"""Reference sampler for the speech-token LM (numpy only): upstream CosyVoice's `ras_sampling` and
`sampling_ids` semantics, driven by an explicit `np.random.Generator`.

ras_sampling(scores, decoded):
1. nucleus: p = softmax(scores) in float32; stable descending sort; take tokens while the float32 running
   sum is < top_p and fewer than top_k are taken (so the token that crosses top_p is included); draw one of
   them with probability proportional to p (the subset is not renormalised before the draw, as torch's
   multinomial normalises it anyway);
2. repetition-aware fallback: if that token occurs in the last `win_size` decoded tokens at least
   `win_size * tau_r` times (with upstream's 10 and 0.1: once), its score is set to -inf and a token is drawn
   from softmax(scores) over the whole vocabulary (stop ids included).
sampling_ids(...) first masks `eos` with -inf while fewer than min_len tokens have been produced.

Each draw uses one uniform number u = rng.random() and inverse-CDF sampling on the float64 cumulative sum
(searchsorted). Upstream draws with torch.multinomial, which cannot be reproduced outside torch; parity is
shown by running the upstream PyTorch decode loop with this sampler injected (exporters/oracles/llm.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RasParams:
    top_p: float = 0.8
    top_k: int = 25
    win_size: int = 10
    tau_r: float = 0.1

    @classmethod
    def from_facts(cls, sampling: dict) -> RasParams:
        """From an `llm` spec's facts['sampling'] (the bundle yaml's `llm.sampling` keywords)."""
        method = sampling.get("method", "ras_sampling")
        if method != "ras_sampling":
            raise ValueError(f"sampling method {method!r} is not implemented (only ras_sampling)")
        return cls(**{k: sampling[k] for k in ("top_p", "top_k", "win_size", "tau_r") if k in sampling})


def softmax(scores: np.ndarray) -> np.ndarray:
    """float32 softmax; -inf scores get probability 0."""
    x = np.asarray(scores, dtype=np.float32)
    e = np.exp(x - x.max())
    return (e / e.sum(dtype=np.float32)).astype(np.float32)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max()
    return (shifted - np.log(np.exp(shifted).sum(dtype=np.float32))).astype(np.float32)


def draw(weights: np.ndarray, rng: np.random.Generator) -> int:
    """Index i with probability weights[i] / sum(weights), from one uniform draw (inverse CDF)."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    u = rng.random() * cdf[-1]
    return int(min(np.searchsorted(cdf, u, side="right"), len(cdf) - 1))


def nucleus_candidates(scores: np.ndarray, top_p: float, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, their probabilities) of the nucleus, in descending-probability order (stable)."""
    probs = softmax(scores)
    order = np.argsort(-probs, kind="stable")
    sorted_p = probs[order[:top_k]]
    running = np.cumsum(sorted_p, dtype=np.float32)  # float32 running sum, as upstream's loop
    before = np.concatenate([np.zeros(1, np.float32), running[:-1]])  # the sum when token i is considered
    count = int(np.argmax(before >= np.float32(top_p))) if np.any(before >= np.float32(top_p)) else len(sorted_p)
    return order[:count], sorted_p[:count]


def ras_sample(
    scores: np.ndarray, decoded: Sequence[int], rng: np.random.Generator, params: RasParams = RasParams()
) -> int:
    """Upstream `ras_sampling` on `scores` (log-probs or logits over the speech vocabulary)."""
    scores = np.array(scores, dtype=np.float32)  # a copy: the fallback masks one entry
    ids, probs = nucleus_candidates(scores, params.top_p, params.top_k)
    token = int(ids[draw(probs, rng)])
    recent = list(decoded[-params.win_size :]) if params.win_size > 0 else []
    if recent.count(token) >= params.win_size * params.tau_r:
        scores[token] = -np.inf
        token = draw(softmax(scores), rng)
    return token


def sampling_ids(
    scores: np.ndarray,
    decoded: Sequence[int],
    rng: np.random.Generator,
    eos: int,
    ignore_eos: bool,
    params: RasParams = RasParams(),
) -> int:
    """Upstream `sampling_ids`: mask `eos` while ignore_eos (i < min_len), then ras_sampling."""
    if ignore_eos:
        scores = np.array(scores, dtype=np.float32)
        scores[eos] = -np.inf
    return ras_sample(scores, decoded, rng, params)


class RasSampler:
    """A seeded ras_sampling callable `(scores, decoded) -> token`, the shape the runtime and the upstream
    adapter take."""

    def __init__(self, seed: int | np.random.Generator, params: RasParams = RasParams()):
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.params = params

    def __call__(self, scores: np.ndarray, decoded: Sequence[int]) -> int:
        return ras_sample(scores, decoded, self.rng, self.params)


def greedy(scores: np.ndarray, decoded: Sequence[int]) -> int:
    """argmax (first index on ties), for deterministic parity runs."""
    return int(np.argmax(scores))
