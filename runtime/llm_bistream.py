"""Bi-streaming LLM decoding: text arrives piece by piece, speech tokens leave one by one (CosyVoice2).

Replays upstream `Qwen2LM.inference_bistream` (mix_ratio 5:15) as a push-driven state machine: the
caller feeds text token ids with `push(ids)` / `close()`, and `tokens()` yields speech tokens, or
`NEED_TEXT` when nothing more can be decoded until more text arrives.

1. lm_input = [sos]; text_cache = embed(prompt_text); next_fill = (P // 15 + 1) * 15 - P (P prompt tokens).
2. Per text token (upstream feeds its text generator token by token): while prompt speech remains and
   at least 5 text tokens are cached, append 5 text + 15 prompt-speech embeddings to lm_input.
3. Once the prompt speech is used up: after a fill token (or before anything was decoded) 5 more cached
   text tokens are needed, else wait; then decode: at len(out) == next_fill force the fill token,
   otherwise sample with eos masked; a fill ends this burst (it is not fed back; the next 5 text
   tokens replace lm_input), any other token is yielded and fed back.
4. After the last text: lm_input += rest of the text cache + task_id; decode with eos allowed until a
   stop id.

Deviations (documented, deliberate), only where upstream fails: upstream raises ValueError when the model
samples a special id other than fill (step 3) or eos (step 4); here such a draw in step 3 is redrawn with
that id masked, and any stop id ends step 4. Whenever upstream does not raise, the draws are identical.
Upstream has no length limit in step 4 (its pitfall P8); here it is capped at max_token_text_ratio times
the text tokens seen (at least `min_cap`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np

from runtime.llm_stage import LLMStage
from runtime.sampling import log_softmax, sampling_ids
from specs.errors import ToolError

NEED_TEXT = object()  # yielded by BistreamDecoder.tokens() when it must wait for more text


class BistreamDecoder:
    def __init__(
        self,
        llm: LLMStage,
        prompt_text_ids: Sequence[int] = (),
        prompt_speech_tokens: Sequence[int] = (),
        seed: int = 0,
        capacity: int = 8192,
        min_cap: int = 100,
        sampler=None,
    ):
        """`sampler(scores, decoded) -> token` replaces ras_sampling with the seeded rng (tests inject the same one
        into upstream); the min_len mask is applied before it either way, as upstream's sampling_ids does."""
        f = llm.facts
        self.llm = llm
        self.text_ratio, self.speech_ratio = (int(r) for r in f["mix_ratio"])
        self.fill = int(f["fill_token"])
        self.eos = int(f["eos_token"])
        self.speech_size = int(f.get("speech_token_size", self.eos))
        # the id sampling_ids masks while ignore_eos: speech_token_size (eos in CosyVoice2, sos in CosyVoice3)
        self.masked = int(f.get("min_len_masked_token", self.eos))
        self.max_ratio = float(f["max_token_text_ratio"])
        self.stop = set(int(t) for t in f["stop_tokens"])
        self.rng = np.random.default_rng(seed)
        self.sampler = sampler
        self.step = llm.stepper(capacity)
        self.capacity = capacity
        self.min_cap = min_cap
        self.pending: deque[int] = deque()
        self.closed = False
        self.n_text = 0
        prompt_text_ids = [int(t) for t in prompt_text_ids]
        # CosyVoice3: the prompt text up to its <|endofprompt|> goes straight after sos (upstream asserts it is
        # there); only the rest is mixed with the prompt speech
        self.head: list[np.ndarray] = []
        required = f.get("required_text_token")
        if required is not None:
            if int(required) not in prompt_text_ids:
                raise ToolError(
                    "prompt text",
                    f"has no token {int(required)} (<|endofprompt|>)",
                    "an instruction ending in <|endofprompt|> first (upstream's inference_bistream asserts it)",
                )
            cut = prompt_text_ids.index(int(required)) + 1
            self.head = [llm.embed_tokens[t] for t in prompt_text_ids[:cut]]
            prompt_text_ids = prompt_text_ids[cut:]
        self.text_cache = [llm.embed_tokens[t] for t in prompt_text_ids]
        self.prompt_speech = [llm.speech_embedding[int(t)] for t in prompt_speech_tokens]
        p = len(self.prompt_speech)
        self.next_fill = (p // self.speech_ratio + 1) * self.speech_ratio - p
        self.out: list[int] = []
        self.positions = 0

    def push(self, ids: Sequence[int]) -> None:
        if self.closed:
            raise RuntimeError("push after close")
        self.pending.extend(int(i) for i in ids)

    def close(self) -> None:
        self.closed = True

    # ---- decoding ---------------------------------------------------------------------------------------
    def _forward(self, rows: list[np.ndarray]) -> np.ndarray:
        x = np.stack(rows).astype(np.float32)[None]
        self.positions += x.shape[1]
        if self.positions >= self.capacity:
            raise RuntimeError(f"bistream decoding exceeded {self.capacity} positions")
        return log_softmax(self.step(x)[0])

    def _draw(self, logp: np.ndarray, ignore_eos: bool) -> int:
        if self.sampler is None:
            return sampling_ids(logp, self.out, self.rng, self.masked, ignore_eos, self.llm.params)
        scores = np.array(logp, dtype=np.float32)
        if ignore_eos:
            scores[self.masked] = -np.inf
        return int(self.sampler(scores, self.out))

    def _sample(self, logp: np.ndarray, ignore_eos: bool, forbidden: frozenset = frozenset()) -> int:
        token = self._draw(logp, ignore_eos)
        while token in forbidden:  # upstream would raise here: redraw without that id
            logp = logp.copy()
            logp[token] = -np.inf
            token = self._draw(logp, ignore_eos)
        return token

    def tokens(self) -> Iterator[object]:
        f = self.llm.facts
        lm_input = [self.llm.llm_embedding[f["sos_index"]], *self.head]
        specials_but_fill = frozenset(
            t for t in range(self.speech_size, len(self.llm.speech_embedding)) if t != self.fill
        )
        while True:
            if not self.pending:
                if self.closed:
                    break
                yield NEED_TEXT
                continue
            self.text_cache.append(self.llm.embed_tokens[self.pending.popleft()])
            self.n_text += 1
            while self.prompt_speech and len(self.text_cache) >= self.text_ratio:
                lm_input += self.text_cache[: self.text_ratio] + self.prompt_speech[: self.speech_ratio]
                del self.text_cache[: self.text_ratio]
                del self.prompt_speech[: self.speech_ratio]
            if self.prompt_speech:
                continue
            after_fill = bool(self.out) and self.out[-1] == self.fill
            # upstream tests lm_input.size(1) == 1 literally: with CosyVoice3's instruction head (and no prompt
            # speech) the first decode therefore starts before any text; kept as upstream does it
            if after_fill or (not self.out and len(lm_input) == 1):
                if len(self.text_cache) < self.text_ratio:
                    continue  # wait for more text
                chunk = self.text_cache[: self.text_ratio]
                lm_input = chunk if after_fill else lm_input + chunk
                del self.text_cache[: self.text_ratio]
            while True:
                logp = self._forward(lm_input)
                if self.next_fill != -1 and len(self.out) == self.next_fill:
                    token = self.fill
                    self.next_fill += self.speech_ratio + 1
                else:
                    token = self._sample(logp, ignore_eos=True, forbidden=specials_but_fill)
                if token == self.fill:
                    self.next_fill = len(self.out) + self.speech_ratio + 1
                self.out.append(token)
                if token == self.fill:
                    break
                yield token
                lm_input = [self.llm.speech_embedding[token]]
        # final decode: the rest of the text, task_id, then until a stop id
        lm_input = lm_input + self.text_cache + [self.llm.llm_embedding[f["task_id_index"]]]
        cap = max(self.min_cap, int(self.max_ratio * self.n_text))
        for _ in range(cap):
            logp = self._forward(lm_input)
            token = self._sample(logp, ignore_eos=False)
            self.out.append(token)
            if token in self.stop:
                return
            yield token
            lm_input = [self.llm.speech_embedding[token]]
