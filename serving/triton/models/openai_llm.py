"""The LLM tier behind an OpenAI-compatible `/v1/chat/completions` URL (--llm openai=URL): vLLM, trtllm-serve or
SGLang serving an HF-format checkpoint whose vocabulary has the speech tokens, as upstream's Triton recipe
(runtime/triton_trtllm cosyvoice2_dit / cosyvoice3 BLS) calls it:

    messages: user = prompt transcript ++ sentence (text), assistant = the prompt's speech tokens as <|s_N|>
    stream: true, stop: the family's end-of-speech tokens; the reply's text carries <|s_N|> tokens (SSE deltas)

Unlike upstream it sends the sentence's seed and the runtime's length rule (min_tokens / max_tokens from the
LLM graph's ratios, capped by the repository's max_tokens) and the ras_sampling nucleus (top_p, top_k). The
engine's sampler is not upstream's RAS, so the tokens (and audio) differ from tts-run's local LLM.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator

from runtime.sampling import RasParams
from serving.triton.models.base import RemoteError

SPEECH_TOKEN = re.compile(r"<\|s_(\d+)\|>")
STOP = ["<|eos1|>", "<|eos|>"]  # upstream's names of the end-of-speech ids in the HF checkpoint's vocabulary
TIMEOUT_S = 120.0


def speech_text(tokens) -> str:
    return "".join(f"<|s_{int(t)}|>" for t in tokens)


class OpenAILLM:
    def __init__(self, url: str, facts: dict, max_tokens: int, tokenizer, model: str = "cosyvoice"):
        self.url = url
        self.facts = facts
        self.max_tokens = max_tokens
        self.tokenizer = tokenizer
        self.model = model
        self.params = RasParams.from_facts(facts.get("sampling", {}))
        self.vocab = int(facts["speech_token_size"])

    def payload(self, text_ids, prompt_text_ids, prompt_speech_tokens, seed: int) -> dict:
        n = len(text_ids)
        lo = int(n * float(self.facts.get("min_token_text_ratio", 0)))
        hi = min(self.max_tokens, int(n * float(self.facts.get("max_token_text_ratio", self.max_tokens))))
        text = self.tokenizer.decode([*map(int, prompt_text_ids), *map(int, text_ids)], skip_special_tokens=False)
        return {
            "model": self.model,
            "messages": [
                {"role": "user", "content": text},
                {"role": "assistant", "content": speech_text(prompt_speech_tokens)},
            ],
            "stream": True,
            "max_tokens": max(hi, 1),
            "min_tokens": min(lo, hi),
            "top_p": self.params.top_p,
            "top_k": self.params.top_k,
            "seed": int(seed),
            "stop": STOP,
            "continue_final_message": True,
            "add_generation_prompt": False,
        }

    def generate(self, text_ids, prompt_text_ids=(), prompt_speech_tokens=(), sampler=None, seed=0, embedding=None):
        body = self.payload(text_ids, prompt_text_ids, prompt_speech_tokens, sampler.seed if sampler else seed)
        yield from self.stream(body)

    def stream(self, body: dict) -> Iterator[int]:
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        buffer, count = "", 0
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
                for raw in resp:
                    line = raw.decode("utf-8", errors="replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        break
                    try:
                        delta = json.loads(data)["choices"][0].get("delta", {}).get("content") or ""
                    except (ValueError, KeyError, IndexError, TypeError):
                        raise RemoteError(
                            f"llm {self.url} | sent an event that is not a chat delta: {data[:120]}"
                        ) from None
                    buffer += delta
                    # complete <|s_N|> tokens leave the buffer; a token split across events waits for its end
                    while (m := SPEECH_TOKEN.search(buffer)) is not None:
                        buffer, token = buffer[m.end() :], int(m.group(1))
                        if token >= self.vocab:
                            raise RemoteError(f"llm {self.url} | sent speech token {token}: the flow has {self.vocab}")
                        count += 1
                        yield token
                        if count >= body["max_tokens"]:
                            return
        except urllib.error.HTTPError as e:
            raise RemoteError(f"llm {self.url} | HTTP {e.code}: {e.read()[:200].decode(errors='replace')}") from None
        except (urllib.error.URLError, OSError) as e:
            raise RemoteError(
                f"llm {self.url} | cannot be reached ({e}). Note: the server of --llm openai=URL"
            ) from None
