"""Upstream `CosyVoice2Model.tts` as the end-to-end oracle, with its randomness made the runtime's.

The LLM samples with a given sampler (upstream's torch.multinomial cannot be reproduced outside torch) and
each HiFT call gets the runtime vocoder's noise for the same absolute mel frames (specs.noise.FrameNoise),
so upstream and `TtsSession` do exactly the same work. A fresh upstream model per call resets its hop
growth (its pitfall P4), as the runtime does per request. Used by tests/test_e2e_parity.py and
ci/bench_e2e.py.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import numpy as np


def upstream_tts(
    model, text_ids, prompt, stream: bool, sampler: Callable, noise_seed: int, llm_prompt_text=None
) -> Iterator[np.ndarray]:
    """Yield upstream's float audio chunks (one per token2wav call). `prompt` is a runtime.session.Prompt;
    `sampler(scores, decoded) -> token`; `llm_prompt_text`: the LLM's prompt text ids when they are not the
    prompt's (CosyVoice3: the instruction the runtime adds). CosyVoice2 packs: `CosyVoice2Model` with the runtime's
    vocoder noise injected; CosyVoice3: `CosyVoice3Model`, whose HiFT noise is its fixed buffer (the pack's data)."""
    import torch
    from cosyvoice.cli.model import CosyVoice2Model, CosyVoice3Model

    from exporters.oracles.hift import hift_noise
    from exporters.oracles.llm import injected_sampler
    from specs.noise import FrameNoise

    v3 = model.family == "cosyvoice3"
    up = (CosyVoice3Model if v3 else CosyVoice2Model)(model.llm, model.flow, model.hift)
    i32 = lambda a: torch.as_tensor(np.asarray(a, np.int64).reshape(1, -1), dtype=torch.int32)  # noqa: E731
    llm_text = prompt.text_ids if prompt.llm_uses_prompt else np.zeros(0, np.int64)
    if llm_prompt_text is not None:
        llm_text = np.asarray(llm_prompt_text, np.int64)
    llm_speech = prompt.speech_tokens if prompt.llm_uses_prompt else np.zeros(0, np.int64)
    if v3:
        from exporters.oracles.hift_v3 import restored_f0_dtype

        vocoder_noise = restored_f0_dtype(model.hift)
    else:
        noise = FrameNoise(noise_seed, int(model.hift.f0_upsamp.scale_factor), model.hift.nb_harmonics + 1)
        vocoder_noise = hift_noise(model.hift, noise, up.mel_cache_len)
    with (
        injected_sampler(model.llm, sampler),
        vocoder_noise,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # torch.cuda.amp.autocast deprecation inside token2wav
        for out in up.tts(
            text=i32(text_ids),
            flow_embedding=torch.from_numpy(prompt.embedding),
            llm_embedding=torch.from_numpy(prompt.embedding),
            prompt_text=i32(llm_text),
            llm_prompt_speech_token=i32(llm_speech),
            flow_prompt_speech_token=i32(prompt.speech_tokens),
            prompt_speech_feat=torch.from_numpy(prompt.speech_feat),
            stream=stream,
        ):
            yield out["tts_speech"].numpy()[0]
