"""The upstream PyTorch LM path as parity oracle: one `Qwen2Encoder.forward_one_step` + `llm_decoder` step,
and upstream's own non-bistream decode loop (`Qwen2LM.inference`) with the sampler swapped for an injected one.

Upstream draws tokens with `torch.multinomial`, which nothing outside torch reproduces; parity of the
sampled path is therefore shown with the same numpy sampler (runtime/sampling.py) on both sides, seeded
alike. Used by the `llm` exporter's test vectors, the tests and ci/check_llm_full.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np

# (scores over the speech vocabulary as a float32 numpy array, tokens decoded so far) -> next token
NumpySampler = Callable[[np.ndarray, list], int]


def special_table(llm):
    """The table holding the sos and task_id rows, chosen as `Qwen2LM.inference` chooses it (by class name):
    `llm_embedding` for Qwen2LM (CosyVoice2), `speech_embedding` for CosyVoice3LM (sos and task_id are
    speech_token_size + 0 and + 2 there)."""
    name = type(llm).__name__
    if name == "CosyVoice3LM":
        return llm.speech_embedding
    if name == "Qwen2LM":
        return llm.llm_embedding
    raise ValueError(f"no lm_input layout for {name} (upstream Qwen2LM.inference knows Qwen2LM and CosyVoice3LM)")


def lm_input(llm, text_ids, prompt_speech_tokens):
    """(1, L, hidden) torch tensor: [sos, embed_tokens(text_ids), task_id, speech_embedding(prompt tokens)],
    the layout of `Qwen2LM.inference` (text_ids = prompt_text ⧺ text; sos / task_id rows per special_table)."""
    import torch

    text = torch.as_tensor(np.asarray(text_ids, np.int64)).reshape(1, -1)
    speech = torch.as_tensor(np.asarray(prompt_speech_tokens, np.int64)).reshape(1, -1)
    special = special_table(llm)
    with torch.no_grad():
        parts = [
            special.weight[llm.sos].reshape(1, 1, -1),
            llm.llm.model.model.embed_tokens(text),
            special.weight[llm.task_id].reshape(1, 1, -1),
            llm.speech_embedding(speech),
        ]
        return torch.cat(parts, dim=1).detach()


def upstream_step(llm, xs, cache):
    """One upstream forward: (logits (1, V) float32 numpy, cache). Masks as upstream builds them: `inference`
    passes tril(L, L) of the new input's length L (prefill, then L = 1); `inference_bistream`, the only caller
    feeding several positions after a cache, passes tril(past + L, past + L). Upstream keeps the last row."""
    import torch

    length = xs.shape[1]
    past = 0 if cache is None else cache.get_seq_length()
    side = past + length if past and length > 1 else length
    masks = torch.tril(torch.ones(1, side, side)).to(torch.bool)
    with torch.no_grad():
        y, cache = llm.llm.forward_one_step(xs, masks=masks, cache=cache)
        logits = llm.llm_decoder(y[:, -1])
    return logits.numpy().astype(np.float32), cache


def cache_arrays(cache) -> list[np.ndarray]:
    """[key_0, value_0, key_1, ...] copies of a transformers DynamicCache, each (1, kv_heads, T, head_dim)."""
    out = []
    for k, v in zip(cache.key_cache, cache.value_cache):
        out += [k.detach().numpy().copy(), v.detach().numpy().copy()]
    return out


@contextlib.contextmanager
def injected_sampler(llm, sampler: NumpySampler):
    """Temporarily replace `llm.sampling` (upstream's ras_sampling partial) with a numpy sampler. Upstream's
    `sampling_ids` still applies its own min_len eos mask (in torch) before calling it."""

    def adapter(weighted_scores, decoded_tokens, sampling):
        return int(sampler(weighted_scores.detach().float().numpy().copy(), list(decoded_tokens)))

    saved = llm.sampling
    llm.sampling = adapter
    try:
        yield
    finally:
        llm.sampling = saved


def upstream_decode(
    llm, text_ids, prompt_text_ids=(), prompt_speech_tokens=(), sampler: NumpySampler | None = None
) -> Iterator[int]:
    """Upstream `Qwen2LM.inference` (non-bistream), tokens one by one; greedy when no sampler is given."""
    import torch

    sampler = sampler or (lambda scores, decoded: int(np.argmax(scores)))
    as_row = lambda ids: torch.as_tensor(np.asarray(ids, np.int64)).reshape(1, -1)  # noqa: E731
    text, prompt_text, speech = as_row(text_ids), as_row(prompt_text_ids), as_row(prompt_speech_tokens)
    with injected_sampler(llm, sampler):
        for token in llm.inference(
            text=text,
            text_len=torch.tensor([text.shape[1]]),
            prompt_text=prompt_text,
            prompt_text_len=torch.tensor([prompt_text.shape[1]]),
            prompt_speech_token=speech,
            prompt_speech_token_len=torch.tensor([speech.shape[1]]),
            embedding=torch.zeros(0, 192),
        ):
            yield int(token)
