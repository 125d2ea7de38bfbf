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
    model,
    text_ids,
    prompt,
    stream: bool,
    sampler: Callable,
    noise_seed: int,
    llm_prompt_text=None,
    flow_seed: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield upstream's float audio chunks (one per token2wav call). `prompt` is a runtime.session.Prompt;
    `sampler(scores, decoded) -> token`; `llm_prompt_text`: the LLM's prompt text ids when they are not the
    prompt's (CosyVoice3: the instruction the runtime adds). CosyVoice2 packs: `CosyVoice2Model` with the runtime's
    vocoder noise injected; CosyVoice3: `CosyVoice3Model`, whose HiFT noise is its fixed buffer (the pack's data)."""
    if model.family == "cosyvoice1":
        yield from upstream_tts_v1(model, text_ids, prompt, stream, sampler, noise_seed, flow_seed or 0)
        return
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


def upstream_tts_v1(model, text_ids, prompt, stream: bool, sampler: Callable, vocoder_seed: int, flow_seed: int):
    """Upstream `CosyVoiceModel.tts` (CosyVoice 1) with the runtime's randomness: flow call k starts from
    `FlowNoise(flow_seed)(k, frames)` (specs/noise.py; upstream draws randn_like), HiFT call k gets the
    vocoder's `FrameNoise(vocoder_seed)` for its absolute mel frames and `call_phase(vocoder_seed, k)`'s uniforms
    (runtime/vocoder.py; upstream's SineGen draws both). The LLM gets the speaker row only where the runtime's
    prompt gives it one (`llm_speaker`; upstream: llm_embedding deleted in instruct mode)."""
    import torch
    from cosyvoice.cli.model import CosyVoiceModel

    from exporters.graphs.hift_v1 import injected_sinegen
    from exporters.oracles.flow_v1 import injected_noise
    from exporters.oracles.llm import injected_sampler
    from specs.noise import FlowNoise, FrameNoise, phase_uniforms

    up = CosyVoiceModel(model.llm, model.flow, model.hift)
    flow, hift = model.flow, model.hift
    harmonics = int(hift.nb_harmonics) + 1
    flow_noise = FlowNoise(flow_seed, int(flow.output_size))
    frame_noise = FrameNoise(vocoder_seed, int(hift.f0_upsamp.scale_factor), harmonics)
    state = {"flow": 0, "hift": 0, "next": 0}

    def flow_inference(**kw):
        k = state["flow"]
        with injected_noise(lambda _i, shape: flow_noise(k, shape[2])):
            out = type(flow).inference(flow, **kw)
        state["flow"] += 1
        return out

    def hift_inference(speech_feat, cache_source):
        k = state["hift"]
        cached = 0 if k == 0 else up.mel_cache_len
        first, frames = state["next"] - cached, speech_feat.shape[2]
        with injected_sinegen(frame_noise(first, frames), phase_uniforms(vocoder_seed, k, harmonics)):
            out = type(hift).inference(hift, speech_feat=speech_feat, cache_source=cache_source)
        state["next"] += frames - cached
        state["hift"] += 1
        return out

    i32 = lambda a: torch.as_tensor(np.asarray(a, np.int64).reshape(1, -1), dtype=torch.int32)  # noqa: E731
    llm_text = prompt.text_ids if prompt.llm_uses_prompt else np.zeros(0, np.int64)
    llm_speech = prompt.speech_tokens if prompt.llm_uses_prompt else np.zeros(0, np.int64)
    spk = torch.from_numpy(np.asarray(prompt.embedding, np.float32).reshape(1, -1))
    flow.inference, hift.inference = flow_inference, hift_inference
    try:
        with injected_sampler(model.llm, sampler), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.cuda.amp.autocast deprecation inside token2wav
            for out in up.tts(
                text=i32(text_ids),
                flow_embedding=spk,
                llm_embedding=spk if prompt.llm_speaker else torch.zeros(0, spk.shape[1]),
                prompt_text=i32(llm_text),
                llm_prompt_speech_token=i32(llm_speech),
                flow_prompt_speech_token=i32(prompt.speech_tokens),
                prompt_speech_feat=torch.from_numpy(np.asarray(prompt.speech_feat, np.float32)),
                stream=stream,
            ):
                yield out["tts_speech"].numpy()[0]
    finally:
        del flow.inference, hift.inference  # back to the class methods
