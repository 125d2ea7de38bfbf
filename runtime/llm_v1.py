"""The CosyVoice 1 LLM stage: text ids (+ prompt, speaker) -> speech tokens, on the pack's `llm.text_encoder` and
`llm` graphs (numpy + ONNX Runtime), with runtime/llm_stage.py's API so the engine can swap it in.

Same behaviour as upstream's `TransformerLM.inference`: the text encoder graph runs once per request on
prompt_text ++ text; lm_input = [sos, spk_h (only with a speaker embedding), text_h, task_id,
speech_embedding(prompt speech)]; a prefill call, then one call per token with the next input
speech_embedding[token]; eos masked for the first int(N * min_token_text_ratio) steps, at most
int(N * max_token_text_ratio) steps, N = len(text ids) without the prompt text; stop on eos (not yielded).
Ids, ratios and table names come from the `llm` graph's spec facts.

The attention cache is one tensor, (num_blocks, heads, positions, 2 * head_dim). With the backend's I/O-binding
hook (ONNX Runtime on CPU) it lives in two preallocated banks sized for the whole utterance, used alternately as
runtime/llm_stage.py's BoundStepper does (call k reads the past from one bank, the graph writes past ++ new
straight into the other); otherwise (TensorRT plans, `io_binding=False`) plain `run` calls.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import numpy as np

from backends.ort import OrtRunner
from backends.runner import Binding, Runner
from runtime.llm_stage import Sampler, decode
from runtime.sampling import RasParams, RasSampler
from specs.errors import ToolError
from specs.pack import Pack

REQUIRED_FACTS = (
    "num_blocks",
    "num_heads",
    "head_dim",
    "hidden_size",
    "logits_size",
    "spk_embed_dim",
    "text_encoder",
    "data",
    "sos_index",
    "task_id_index",
    "eos_token",
    "stop_tokens",
    "min_token_text_ratio",
    "max_token_text_ratio",
)


class V1BoundStepper:
    """The step graph with every tensor bound in place: the cache in two banks of `capacity` positions (a prefix
    of a flat buffer is a contiguous (blocks, heads, T, 2 d_k) array), logits in a fixed buffer. The returned
    logits array is overwritten by the next call."""

    def __init__(self, stage: V1LLMStage, capacity: int):
        f = stage.facts
        self.session = stage.session
        self.shape = (int(f["num_blocks"]), int(f["num_heads"]), 2 * int(f["head_dim"]))
        self.capacity = int(capacity)
        blocks, heads, width = self.shape
        self.banks = [np.empty(blocks * heads * self.capacity * width, np.float32) for _ in range(2)]
        self.logits = np.empty((1, int(f["logits_size"])), np.float32)
        self.read = 0  # bank holding the past
        self.length = 0  # cached positions

    def view(self, bank: int, length: int) -> np.ndarray:
        blocks, heads, width = self.shape
        return self.banks[bank][: blocks * heads * length * width].reshape(blocks, heads, length, width)

    def cache(self) -> np.ndarray:
        return self.view(self.read, self.length)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        past = self.length
        total = past + x.shape[1]
        if total > self.capacity:
            raise ToolError(
                "llm stage", f"{total} positions exceed the preallocated {self.capacity}", "a larger capacity"
            )
        x = np.ascontiguousarray(x, np.float32)
        if past == 0:  # first call: check the feed against the spec once
            self.session.spec.check_feed({"inputs_embeds": x, "att_cache": self.view(0, 0)})
        write = 1 - self.read
        b = cast(Binding, self.session.binding())  # only made for sessions with a binding
        b.bind_input("inputs_embeds", x)
        b.bind_input("att_cache", self.view(self.read, past))
        b.bind_output("att_cache_out", self.view(write, total))
        b.bind_output("logits", self.logits)
        b.run()
        self.read, self.length = write, total
        return self.logits


class V1PlainStepper:
    """Same contract with `Runner.run`: fresh input and output arrays on every call."""

    def __init__(self, stage: V1LLMStage):
        f = stage.facts
        self.session = stage.session
        shape = (int(f["num_blocks"]), int(f["num_heads"]), 0, 2 * int(f["head_dim"]))
        self.past = np.zeros(shape, np.float32)

    @property
    def length(self) -> int:
        return self.past.shape[2]

    def cache(self) -> np.ndarray:
        return self.past

    def __call__(self, x: np.ndarray) -> np.ndarray:
        feed = {"inputs_embeds": np.ascontiguousarray(x, np.float32), "att_cache": self.past}
        out = self.session.run(feed, check=self.length == 0)  # spec check on the first call only
        self.past = out["att_cache_out"]
        return out["logits"]


class V1LLMStage:
    """Speech-token generation on a CosyVoice 1 pack's LLM graphs (`llm`, or a variant such as `llm.int8`)."""

    def __init__(
        self,
        pack: Pack | str | Path,
        graph: str = "llm",
        device: str = "cpu",
        threads: int | None = None,
        io_binding: bool = True,
        session: Runner | None = None,
        text_session: Runner | None = None,
    ):
        pack = pack if isinstance(pack, Pack) else Pack.open(pack)
        entry = pack.graph(graph)
        self.spec = entry.spec()
        f = self.spec.facts
        missing = [k for k in REQUIRED_FACTS if k not in f]
        if missing:
            raise ToolError(entry.spec_path, f"facts lack {missing}", "a CosyVoice 1 llm graph exported by tts-export")
        self.facts = f
        # `session` / `text_session`: any Runner (e.g. TensorRT plans); bound stepping where the backend offers it
        self.session: Runner = session or OrtRunner(entry.onnx_path, self.spec, device=device, threads=threads)
        if text_session is None:
            text = pack.graph(f["text_encoder"])
            text_session = OrtRunner(text.onnx_path, text.spec(), device=device, threads=threads)
        self.text_session: Runner = text_session
        self.speech_embedding = np.asarray(pack.data(f["data"]["speech_embedding"]))
        self.llm_embedding = np.asarray(pack.data(f["data"]["llm_embedding"]))
        self.params = RasParams.from_facts(f.get("sampling", {}))
        self.stop = set(int(t) for t in f["stop_tokens"])
        self.io_binding = io_binding and self.session.binding() is not None

    # ---- inputs ---------------------------------------------------------------------------------------------
    def speaker(self, embedding) -> np.ndarray | None:
        """(1, spk_dim) float32, or None without a speaker (None or an empty array: upstream's (0, 192))."""
        if embedding is None:
            return None
        emb = np.asarray(embedding, np.float32)
        if emb.size == 0:
            return None
        dim = int(self.facts["spk_embed_dim"])
        if emb.size != dim:
            raise ToolError("llm stage", f"speaker embedding has shape {list(emb.shape)}", f"({dim},) or (1, {dim})")
        return emb.reshape(1, dim)

    def lm_input(
        self,
        text_ids: Sequence[int],
        prompt_text_ids: Sequence[int] = (),
        prompt_speech_tokens: Sequence[int] = (),
        embedding=None,
    ) -> np.ndarray:
        """(1, L, hidden): [sos, spk_h (with a speaker), text_h(prompt_text ++ text), task_id, prompt speech]."""
        f = self.facts
        ids = np.concatenate([np.asarray(prompt_text_ids, np.int64), np.asarray(text_ids, np.int64)])[None]
        spk = self.speaker(embedding)
        feed = {
            "text_ids": ids,
            "embedding": np.zeros((1, int(f["spk_embed_dim"])), np.float32) if spk is None else spk,
        }
        enc = self.text_session.run(feed)
        rows = [
            self.llm_embedding[f["sos_index"]][None],
            *([] if spk is None else [enc["spk_h"][0]]),
            enc["text_h"][0],
            self.llm_embedding[f["task_id_index"]][None],
            self.speech_embedding[np.asarray(prompt_speech_tokens, np.int64)],
        ]
        return np.concatenate(rows, axis=0).astype(np.float32)[None]

    def length_limits(self, n_text: int) -> tuple[int, int]:
        f = self.facts
        return int(n_text * f["min_token_text_ratio"]), int(n_text * f["max_token_text_ratio"])

    # ---- decoding ------------------------------------------------------------------------------------------
    def generate(
        self,
        text_ids: Sequence[int],
        prompt_text_ids: Sequence[int] = (),
        prompt_speech_tokens: Sequence[int] = (),
        sampler: Sampler | None = None,
        seed: int = 0,
        embedding=None,
    ) -> Iterator[int]:
        """Yield speech tokens one by one. `sampler` gets log-probs (eos already masked before min_len) and the
        tokens so far; default: ras_sampling with the spec's parameters, seeded with `seed`. `embedding`: the
        speaker x-vector (192,) or (1, 192); None or empty for no speaker row (instruct mode)."""
        sampler = sampler or RasSampler(seed, self.params)
        min_len, max_len = self.length_limits(len(text_ids))
        if max_len <= 0:  # upstream's loop runs max_len times: no text, no tokens
            return
        x = self.lm_input(text_ids, prompt_text_ids, prompt_speech_tokens, embedding)
        masked = int(self.facts.get("min_len_masked_token", self.facts["eos_token"]))
        step = self.stepper(x.shape[1] + max_len)
        yield from decode(step, x, min_len, max_len, masked, self.stop, self.speech_embedding, sampler)

    def stepper(self, capacity: int) -> V1BoundStepper | V1PlainStepper:
        """A callable embeds (1, S, hidden) -> logits (1, V) that keeps the attention cache between calls, for an
        utterance of at most `capacity` positions (lm_input + generated tokens)."""
        return V1BoundStepper(self, capacity) if self.io_binding else V1PlainStepper(self)
