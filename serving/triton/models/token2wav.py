"""`token2wav`: one stateless flow + HiFT call of a stream, as TtsSession._token2wav makes it in process.

Inputs: the generated tokens so far (up to the call's end), the prompt, token_offset / streaming / finalize of
the schedule's FlowCall, the vocoder seed, and the vocoder state of the previous call (mel cache, source cache,
speech tail, next noise frame; zero-length on the first call). Outputs: the call's PCM16 and the new state
(zero-length again after a final call). The state is a runtime VocoderStage's, rebuilt per call, so the
arithmetic is the in-process one and any instance can serve any call of any stream.
"""

from __future__ import annotations

import numpy as np

from runtime.engine import PackEngine
from runtime.vocoder import VocoderStage
from serving.triton.models.base import ModelArgs, error_response, get, log_error, tensors
from specs.errors import ToolError

OUTPUTS = ("pcm16", "mel_cache_out", "source_cache_out", "speech_cache_out", "next_frame_out")


def restore(vocoder: VocoderStage, mel, source, speech, next_frame: int) -> VocoderStage:
    """A fresh VocoderStage given the previous call's state (its private fields: see the report's API note)."""
    from runtime.vocoder import _Cache

    vocoder.reset()
    vocoder._next_frame = int(next_frame)
    if mel.shape[2]:
        vocoder._cache = _Cache(mel=mel, source=source, speech=speech.reshape(-1))
    return vocoder


def state(vocoder: VocoderStage, mel_bins: int) -> dict[str, np.ndarray]:
    cache = vocoder._cache
    if cache is None:
        mel, source, speech = np.zeros((1, mel_bins, 0), np.float32), np.zeros((1, 1, 0), np.float32), np.zeros(0)
    else:
        mel, source, speech = cache.mel, cache.source, cache.speech
    return {
        "mel_cache_out": np.asarray(mel, np.float32),
        "source_cache_out": np.asarray(source, np.float32),
        "speech_cache_out": np.asarray(speech, np.float32).reshape(1, -1),
        "next_frame_out": np.array([vocoder._next_frame], np.int64),
    }


class Model:
    def __init__(self, args):
        a = ModelArgs(args)
        pack = a.pack()
        self.engine = PackEngine(pack, device=a.device, trt="off")
        if self.engine.chunk_policy.vocoder != "cached" or "phase" in self.engine.hift_session.spec.input_names:
            raise ToolError(pack.root, "token2wav serves the cached HiFT of CosyVoice2 packs only", "a cosyvoice2 pack")
        self.mel_bins = self.engine.flow.mel_bins

    def execute(self, requests):
        out = []
        for r in requests:
            try:
                out.append(self.call(r))
            except ToolError as e:
                out.append(error_response(e.message))
            except Exception as e:  # a bug: logged with its type, answered as an error
                log_error(f"token2wav: {type(e).__name__}: {e}")
                out.append(error_response(f"token2wav | internal error ({type(e).__name__}: {e})"))
        return out

    def call(self, r):
        import triton_python_backend_utils as pb_utils

        finalize = bool(get(r, "finalize")[0])
        mel = self.engine.flow.token2mel(
            get(r, "target_speech_tokens"),
            get(r, "prompt_speech_tokens"),
            get(r, "prompt_speech_feat"),
            get(r, "prompt_spk_embedding"),
            int(get(r, "token_offset")[0]),
            streaming=bool(get(r, "streaming")[0]),
            finalize=finalize,
        )
        vocoder = VocoderStage(self.engine.hift_session, self.engine.chunk_policy, seed=int(get(r, "seed")[0]))
        restore(vocoder, get(r, "mel_cache"), get(r, "source_cache"), get(r, "speech_cache"), get(r, "next_frame")[0])
        pcm = vocoder.push(mel, final=finalize)
        arrays = {"pcm16": pcm.astype(np.int16).reshape(1, -1), **state(vocoder, self.mel_bins)}
        return pb_utils.InferenceResponse(tensors(arrays))

    def finalize(self):
        pass
