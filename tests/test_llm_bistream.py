"""Bi-streaming text input: the runtime's BistreamDecoder on the exported LLM vs upstream
`Qwen2LM.inference_bistream` in PyTorch, same text token stream, same sampler and seed."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import needs_oracle

pytestmark = needs_oracle


@pytest.fixture(scope="module")
def llm_stage(tiny_pack):
    from runtime.llm_stage import LLMStage

    return LLMStage(tiny_pack)


def upstream_bistream(llm, text_ids, prompt_text, prompt_speech, seed, params):
    from runtime.sampling import ras_sample

    rng = np.random.default_rng(seed)
    sampler = lambda scores, decoded: ras_sample(scores, decoded, rng, params)  # noqa: E731
    return upstream_bistream_with(llm, text_ids, prompt_text, prompt_speech, sampler)


def upstream_bistream_with(llm, text_ids, prompt_text, prompt_speech, sampler):
    """Upstream `inference_bistream`'s tokens with `sampler(scores, decoded)` in place of its ras_sampling."""
    import torch

    from exporters.oracles.llm import injected_sampler

    def text_tokens():  # upstream's frontend feeds the text generator token by token
        for t in text_ids:
            yield torch.tensor([[t]], dtype=torch.int32)

    row = lambda a: torch.as_tensor(np.asarray(a, np.int64).reshape(1, -1), dtype=torch.int32)  # noqa: E731
    with injected_sampler(llm, sampler):
        return [
            int(t)
            for t in llm.inference_bistream(
                text=text_tokens(),
                prompt_text=row(prompt_text),
                prompt_text_len=torch.tensor([len(prompt_text)]),
                prompt_speech_token=row(prompt_speech),
                prompt_speech_token_len=torch.tensor([len(prompt_speech)]),
                embedding=torch.zeros(0, 192),
            )
        ]


def runtime_bistream(stage, pieces, prompt_text, prompt_speech, seed):
    """Text arrives in pieces; speech tokens are pulled between pieces as far as they can be decoded."""
    from runtime.llm_bistream import NEED_TEXT, BistreamDecoder

    dec = BistreamDecoder(stage, prompt_text, prompt_speech, seed=seed)
    gen = dec.tokens()
    out, waits = [], 0
    for piece in pieces:
        dec.push(piece)
        for tok in gen:
            if tok is NEED_TEXT:
                waits += 1
                break
            out.append(tok)
    dec.close()
    out.extend(t for t in gen if t is not NEED_TEXT)
    return out, waits


@pytest.mark.parametrize("n_prompt_speech", [0, 40])
def test_bistream_tokens_equal_upstream(llm_stage, tiny_model, n_prompt_speech):
    rng = np.random.default_rng(3)
    text = [int(t) for t in rng.integers(0, 151000, 23)]
    prompt_text = [int(t) for t in rng.integers(0, 151000, 7)]
    prompt_speech = [int(t) for t in rng.integers(0, 6561, n_prompt_speech)]
    pieces = [text[i : i + 4] for i in range(0, len(text), 4)]  # text arrives 4 tokens at a time
    expected = upstream_bistream(tiny_model.llm, text, prompt_text, prompt_speech, 11, llm_stage.params)
    got, waits = runtime_bistream(llm_stage, pieces, prompt_text, prompt_speech, 11)
    assert len(expected) > 30
    assert got == expected
    assert waits >= 2  # it really waited for text between pieces
