"""`llm` (--llm local): the pack's LLM graph (runtime.llm_stage.LLMStage), one generation per decoupled request,
one speech token per response, sampled with upstream's ras_sampling seeded by the request's seed (the seed
TtsSession derives per sentence). A simple correctness / small-scale path, not a continuous-batching engine:
each stream decodes on its own worker thread with its own KV cache."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from runtime.llm_stage import LLMStage
from runtime.sampling import RasSampler
from serving.triton.models.base import FINAL, ModelArgs, error_response, get, log_error, tensors
from specs.errors import ToolError


class Model:
    def __init__(self, args):
        a = ModelArgs(args)
        self.stage = LLMStage(a.pack(), graph="llm", device=a.device)
        self.max_text_tokens = a.int("max_text_tokens")
        self.pool = ThreadPoolExecutor(max_workers=int(a.params.get("max_streams", "8")), thread_name_prefix="llm")

    async def execute(self, requests):
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.pool, self.generate, r) for r in requests))

    def generate(self, r) -> None:
        import triton_python_backend_utils as pb_utils

        sender = r.get_response_sender()
        try:
            text, prompt_text = get(r, "text_ids")[0], get(r, "prompt_text_ids")[0]
            if len(text) + len(prompt_text) > self.max_text_tokens:
                raise ToolError(
                    "text",
                    f"a sentence and the prompt transcript give {len(text) + len(prompt_text)} text tokens",
                    f"at most {self.max_text_tokens} (the repository's max_text_tokens): shorter sentences",
                )
            max_tokens = int(get(r, "max_tokens")[0])
            sampler = RasSampler(int(get(r, "seed")[0]), self.stage.params)
            tokens = self.stage.generate(text, prompt_text, get(r, "prompt_speech_tokens")[0], sampler=sampler)
            for n, token in enumerate(tokens):
                if r.is_cancelled() or n >= max_tokens:
                    break
                sender.send(pb_utils.InferenceResponse(tensors({"speech_token": np.array([token], np.int64)})))
        except ToolError as e:
            sender.send(error_response(e.message), flags=FINAL)
            return
        except Exception as e:
            log_error(f"llm: {type(e).__name__}: {e}")
            sender.send(error_response(f"llm | internal error ({type(e).__name__}: {e})"), flags=FINAL)
            return
        sender.send(flags=FINAL)

    def finalize(self):
        self.pool.shutdown(wait=False, cancel_futures=True)
