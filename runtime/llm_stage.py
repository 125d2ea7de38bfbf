"""The LLM stage of the runtime: text ids (+ prompt) -> speech tokens, on the pack's `llm` graph (numpy + ORT).

Same behaviour as upstream's non-bistream `Qwen2LM.inference`: lm_input = [sos, embed_tokens(prompt_text ++
text), task_id, speech_embedding(prompt speech)]; a prefill call, then one call per token with the next
input speech_embedding[token]; eos masked for the first int(N * min_token_text_ratio) steps, at most
int(N * max_token_text_ratio) steps (2 N and 20 N upstream), N = len(text ids) without the prompt text; stop
on any stop id (not yielded). Ratios, ids and table names come from the graph's spec facts.

The KV cache lives in preallocated buffers bound through the backend's I/O-binding hook (`Runner.binding()`,
ONNX Runtime I/O binding on CPU): two buffers per cache tensor, sized for the whole utterance, used
alternately (call k reads the past from one, the graph writes the present, past ++ new, straight into the
other), so nothing is allocated per step and Python copies nothing; logits, mask and positions are bound to
fixed buffers too. Backends without binding (TensorRT plans) and `io_binding=False` use plain `run` (fresh
input and output arrays every step).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator, Sequence
from pathlib import Path
from typing import cast

import numpy as np

from backends.ort import OrtRunner
from backends.runner import Binding, Runner
from runtime.sampling import RasParams, RasSampler, log_softmax
from specs.errors import ToolError
from specs.pack import Pack

Sampler = Callable[[np.ndarray, Sequence[int]], int]  # (log-probs, decoded so far) -> token


def decode(
    step: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    min_len: int,
    max_len: int,
    masked: int,
    stop: Container[int],
    speech_embedding: np.ndarray,
    sampler: Sampler,
) -> Iterator[int]:
    """Upstream's decode loop (Qwen2LM and CosyVoice 1's TransformerLM alike): `step` prefills on lm_input `x`,
    then takes speech_embedding[last token]; `masked` is -inf for the first `min_len` steps; at most `max_len`
    steps; stop on a `stop` id (not yielded)."""
    out: list[int] = []
    for i in range(max_len):
        logits = step(x if i == 0 else speech_embedding[out[-1]][None, None])
        logp = log_softmax(logits[0])
        if i < min_len:
            logp[masked] = -np.inf
        token = int(sampler(logp, out))
        if token in stop:
            break
        yield token
        out.append(token)


class BoundStepper:
    """Calls the graph with every tensor bound in place (the backend's binding hook). The cache lives in two banks of
    preallocated buffers per cache tensor, sized for `capacity` positions: call k reads the past from one
    bank and ORT writes the present into the other, then the roles swap. Mask, positions and logits are
    fixed buffers too. The returned logits array is overwritten by the next call."""

    def __init__(self, stage: LLMStage, capacity: int):
        f = stage.facts
        self.session = stage.session
        self.names = list(zip(stage.cache_inputs, stage.cache_outputs))
        self.kv_heads, self.head_dim = int(f["num_kv_heads"]), int(f["head_dim"])
        self.capacity = int(capacity)
        size = self.kv_heads * self.capacity * self.head_dim
        self.banks = [[np.empty(size, np.float32) for _ in self.names] for _ in range(2)]
        self.mask = np.ones((1, self.capacity), np.int64)
        self.positions = np.arange(self.capacity, dtype=np.int64)[None]
        self.logits = np.empty((1, int(f["logits_size"])), np.float32)
        self.read = 0  # bank holding the past
        self.length = 0  # cached positions

    def view(self, bank: int, i: int, length: int) -> np.ndarray:
        return self.banks[bank][i][: self.kv_heads * length * self.head_dim].reshape(
            1, self.kv_heads, length, self.head_dim
        )

    def cache(self) -> list[np.ndarray]:
        """Views of the current cache tensors (past_key_values.0.key, .0.value, ...)."""
        return [self.view(self.read, i, self.length) for i in range(len(self.names))]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        past, seq = self.length, x.shape[1]
        total = past + seq
        if total > self.capacity:
            raise ToolError(
                "llm stage",
                f"{total} positions exceed the preallocated {self.capacity}",
                "a larger capacity for this utterance",
            )
        x = np.ascontiguousarray(x, np.float32)
        if past == 0:  # first call: check the feed against the spec once (views, no copies)
            self.session.spec.check_feed(
                {
                    "inputs_embeds": x,
                    "attention_mask": self.mask[:, :total],
                    "position_ids": self.positions[:, :seq],
                    **{n: self.view(0, i, 0) for i, (n, _) in enumerate(self.names)},
                }
            )
        b = cast(Binding, self.session.binding())  # BoundStepper is only made for sessions with a binding
        b.bind_input("inputs_embeds", x)
        b.bind_input("attention_mask", self.mask[:, :total])
        b.bind_input("position_ids", self.positions[:, past:total])
        write = 1 - self.read
        for i, (name_in, name_out) in enumerate(self.names):
            b.bind_input(name_in, self.view(self.read, i, past))
            b.bind_output(name_out, self.view(write, i, total))
        b.bind_output("logits", self.logits)
        b.run()
        self.read, self.length = write, total
        return self.logits


class PlainStepper:
    """Same contract with `OrtRunner.run`: fresh input and output arrays on every call (for comparison)."""

    def __init__(self, stage: LLMStage):
        f = stage.facts
        self.session = stage.session
        self.names = list(zip(stage.cache_inputs, stage.cache_outputs))
        empty = np.zeros((1, int(f["num_kv_heads"]), 0, int(f["head_dim"])), np.float32)
        self.past = [empty] * len(self.names)

    @property
    def length(self) -> int:
        return self.past[0].shape[2]

    def cache(self) -> list[np.ndarray]:
        return list(self.past)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        p, s = self.length, x.shape[1]
        feed = {
            "inputs_embeds": np.ascontiguousarray(x, np.float32),
            "attention_mask": np.ones((1, p + s), np.int64),
            "position_ids": np.arange(p, p + s, dtype=np.int64)[None],
        }
        feed.update((name_in, a) for (name_in, _), a in zip(self.names, self.past))
        out = self.session.run(feed, check=p == 0)  # spec check on the first call only
        self.past = [out[name_out] for _, name_out in self.names]
        return out["logits"]


class LLMStage:
    """Speech-token generation on the pack's LLM graph (`llm`, or a variant such as `llm.int8`)."""

    def __init__(
        self,
        pack: Pack | str | Path,
        graph: str = "llm",
        device: str = "cpu",
        threads: int | None = None,
        io_binding: bool = True,
        session=None,
    ):
        pack = pack if isinstance(pack, Pack) else Pack.open(pack)
        entry = pack.graph(graph)
        self.spec = entry.spec()
        # `session`: any Runner (e.g. a TensorRT plan); bound stepping where the backend offers binding
        self.session: Runner = session or OrtRunner(entry.onnx_path, self.spec, device=device, threads=threads)
        f = self.spec.facts
        for key in (
            "num_layers",
            "num_kv_heads",
            "head_dim",
            "logits_size",
            "data",
            "sos_index",
            "task_id_index",
            "eos_token",
            "stop_tokens",
            "min_token_text_ratio",
            "max_token_text_ratio",
        ):
            if key not in f:
                raise ToolError(entry.spec_path, f"facts lack {key!r}", "an llm graph exported by tts-export")
        self.facts = f
        self.embed_tokens = pack.data(f["data"]["embed_tokens"])  # memory-mapped (text vocab x hidden)
        self.speech_embedding = np.asarray(pack.data(f["data"]["speech_embedding"]))
        # sos / task_id rows: CosyVoice2 has its own 2-row table, CosyVoice3 keeps them in speech_embedding
        sos_table = f["data"].get("llm_embedding")
        self.llm_embedding = np.asarray(pack.data(sos_table)) if sos_table else self.speech_embedding
        self.params = RasParams.from_facts(f.get("sampling", {}))
        self.stop = set(int(t) for t in f["stop_tokens"])
        self.io_binding = io_binding and self.session.binding() is not None
        self.cache_inputs = [n for n in self.spec.input_names if n.startswith("past_key_values.")]
        self.cache_outputs = [n for n in self.spec.output_names if n.startswith("present.")]

    # ---- inputs ---------------------------------------------------------------------------------------------
    def lm_input(
        self, text_ids: Sequence[int], prompt_text_ids: Sequence[int] = (), prompt_speech_tokens: Sequence[int] = ()
    ) -> np.ndarray:
        """(1, L, hidden): [sos, embed_tokens(prompt_text ++ text), task_id, speech_embedding(prompt speech)]."""
        ids = np.concatenate([np.asarray(prompt_text_ids, np.int64), np.asarray(text_ids, np.int64)])
        speech = np.asarray(prompt_speech_tokens, np.int64)
        f = self.facts
        rows = [
            self.llm_embedding[f["sos_index"]][None],
            self.embed_tokens[ids],
            self.llm_embedding[f["task_id_index"]][None],
            self.speech_embedding[speech],
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
        embedding: np.ndarray | None = None,
    ) -> Iterator[int]:
        """Yield speech tokens one by one. `sampler` gets log-probs (eos already masked before min_len) and
        the tokens so far; default: ras_sampling with the spec's parameters, seeded with `seed`. `embedding` is
        ignored, as upstream's Qwen2LM ignores llm_embedding (CosyVoice 1's LLM uses it: runtime/llm_v1.py)."""
        sampler = sampler or RasSampler(seed, self.params)
        x = self.lm_input(text_ids, prompt_text_ids, prompt_speech_tokens)
        min_len, max_len = self.length_limits(len(text_ids))
        # upstream's sampling_ids masks index speech_token_size before min_len: eos in CosyVoice2, sos in v3
        masked = int(self.facts.get("min_len_masked_token", self.facts["eos_token"]))
        step = self.stepper(x.shape[1] + max_len)
        yield from decode(step, x, min_len, max_len, masked, self.stop, self.speech_embedding, sampler)

    def stepper(self, capacity: int) -> BoundStepper | PlainStepper:
        """A callable embeds (1, S, hidden) -> logits (1, V) that keeps the KV cache between calls, for an
        utterance of at most `capacity` positions (lm_input + generated tokens)."""
        return BoundStepper(self, capacity) if self.io_binding else PlainStepper(self)
