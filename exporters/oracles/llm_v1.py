"""The upstream PyTorch path of the CosyVoice 1 LM (`TransformerLM`) as parity oracle: upstream's own
`TransformerLM.inference` loop run with an injected sampler, every `self.llm.forward_chunk` call it makes
recorded (its inputs, cache and outputs) together with the `llm_decoder` scores of that step.

The recorded calls are what the exporters' test vectors and the tests compare against: lm_input (sos, speaker
row, text encoder output, task_id, prompt speech) as upstream builds it, and the cache exactly as upstream
carries it (K‖V on the last axis, `offset` = cached positions). Used by exporters/graphs/llm_v1.py and
tests/test_v1_llm.py.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field

import numpy as np

from exporters.oracles.llm import NumpySampler, injected_sampler


@dataclass
class Call:
    """One upstream `forward_chunk` call of the decode loop and the head scores of its last position."""

    xs: np.ndarray  # (1, L, D) input embeddings (the whole lm_input on the first call)
    offset: int  # upstream's `offset` argument (cached positions)
    att_cache: np.ndarray  # (num_blocks, heads, Tc, 2 d_k); upstream passes zeros((0, 0, 0, 0)) on the first call
    att_cache_out: np.ndarray  # (num_blocks, heads, Tc + L, 2 d_k)
    logits: np.ndarray  # (1, speech_token_size + 1) llm_decoder output of the last position


@dataclass
class Run:
    tokens: list[int] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)


def _np(t) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


@contextlib.contextmanager
def recording(llm, run: Run):
    """Record every `llm.llm.forward_chunk` call and each `llm_decoder` output while the block runs (the
    upstream modules are untouched afterwards)."""
    encoder = llm.llm
    original = encoder.forward_chunk
    scores: list[np.ndarray] = []

    def forward_chunk(xs, offset, required_cache_size, att_cache, cnn_cache, att_mask):
        y, cache, cnn = original(
            xs,
            offset=offset,
            required_cache_size=required_cache_size,
            att_cache=att_cache,
            cnn_cache=cnn_cache,
            att_mask=att_mask,
        )
        run.calls.append(Call(_np(xs), int(offset), _np(att_cache), _np(cache), np.empty(0, np.float32)))
        return y, cache, cnn

    def on_head(module, args, out):
        scores.append(_np(out))

    encoder.forward_chunk = forward_chunk  # an instance attribute shadows the method
    hook = llm.llm_decoder.register_forward_hook(on_head)
    try:
        yield run
    finally:
        hook.remove()
        del encoder.forward_chunk
        for call, s in zip(run.calls, scores):
            call.logits = s


def as_row(ids, dtype=np.int64):
    import torch

    return torch.as_tensor(np.asarray(ids, dtype)).reshape(1, -1)


def speaker_tensor(llm, embedding):
    """upstream's `embedding` argument: (1, spk_dim) for a speaker, (0, spk_dim) for none (instruct mode)."""
    import torch

    if embedding is None or np.asarray(embedding).size == 0:
        return torch.zeros(0, llm.spk_embed_affine_layer.in_features)
    return torch.as_tensor(np.asarray(embedding, np.float32)).reshape(1, -1)


def upstream_run(
    llm,
    text_ids,
    prompt_text_ids=(),
    prompt_speech_tokens=(),
    embedding=None,
    sampler: NumpySampler | None = None,
    max_tokens: int | None = None,
) -> Run:
    """Upstream `TransformerLM.inference` (greedy when no sampler is given), at most `max_tokens` tokens (all
    of them when None), with its forward_chunk calls and head scores recorded."""
    import torch

    sampler = sampler or (lambda scores, decoded: int(np.argmax(scores)))
    text, prompt_text, speech = as_row(text_ids), as_row(prompt_text_ids), as_row(prompt_speech_tokens)
    run = Run()
    with recording(llm, run), injected_sampler(llm, sampler), torch.no_grad():
        gen = llm.inference(
            text=text,
            text_len=torch.tensor([text.shape[1]], dtype=torch.int32),
            prompt_text=prompt_text,
            prompt_text_len=torch.tensor([prompt_text.shape[1]], dtype=torch.int32),
            prompt_speech_token=speech,
            prompt_speech_token_len=torch.tensor([speech.shape[1]], dtype=torch.int32),
            embedding=speaker_tensor(llm, embedding),
        )
        run.tokens = [int(t) for t in itertools.islice(gen, max_tokens)]
        gen.close()
    return run


def causal_over_cache(past: int, length: int):
    """(1, L, past + L) bool: new position i attends to every cached slot and to new positions <= i. Upstream's
    loop passes its two corners: tril(L, L) for the prefill (past 0) and ones(1, 1, 1) for a decode step (L = 1,
    broadcast over the cache)."""
    import torch

    keys = torch.arange(past + length)
    return (keys[None, :] <= (torch.arange(length) + past)[:, None]).unsqueeze(0)


def upstream_chunk(llm, xs: np.ndarray, att_cache: np.ndarray) -> Call:
    """One upstream `forward_chunk` + `llm_decoder` call on `xs` after `att_cache`, offset = cached positions,
    mask `causal_over_cache` (for L > 1 after a cache, a call upstream's v1 loop never makes)."""
    import torch

    x, cache = torch.from_numpy(xs), torch.from_numpy(att_cache)
    past, length = att_cache.shape[2], xs.shape[1]
    with torch.no_grad():
        y, new_cache, _ = llm.llm.forward_chunk(
            x,
            offset=past,
            required_cache_size=-1,
            att_cache=cache,
            cnn_cache=torch.zeros(0, 0, 0, 0),
            att_mask=causal_over_cache(past, length),
        )
        logits = llm.llm_decoder(y[:, -1])
    return Call(xs.copy(), past, att_cache.copy(), _np(new_cache), _np(logits))
