"""`llm`: one step of CosyVoice2's speech-token LM (`Qwen2LM`): Qwen2 backbone + `llm_decoder` head with an
explicit KV cache. One graph for every call: prefill (the whole lm_input, zero-length past), single-token
decode and multi-token extension (bistream), told apart only by the input shapes. Output `logits` are the
raw head scores of the last position (upstream samples from their log_softmax).

Route, chosen by measurement (full size, random weights, 2 threads, interleaved; ci/compare_llm_genai.py):
our torch export (exporters/rewrites/qwen2_step.py: upstream weights, our RoPE and grouped attention in
plain ONNX ops, q/k/v and gate/up fused) vs onnxruntime-genai 0.18's Qwen2 builder (`exclude_embeds`,
`exclude_lm_head`: GroupQueryAttention + rotary contrib ops, head applied outside):
  parity (logits max abs vs upstream, 4 cases): ours 0.9-1.3e-5, GenAI 1.2-1.6e-5;
  decode at 300 cached positions: ours 27.9 ms, GenAI 26.1 ms without the head (earlier run: 35.5 / 34.7);
  prefill of 200 positions: ours 360 ms, GenAI 352 ms.
Equal parity and speed within ~5% (GenAI's figure omits the 6564 x 896 head), so the torch route is kept:
standard ONNX ops only (TensorRT and other execution providers can take it), I/O exactly as the spec (head,
explicit position_ids and mask semantics in the graph), built from the upstream module itself (no
HF-folder round trip, no transformers 5 / onnxruntime-genai dependency). Before fusing q/k/v and gate/up
and making every reshape constant, our first graph was ~15% slower than GenAI's in decode.

The INT8 variant (`llm.int8`, `tts-export --int8`) quantizes the MatMul weights of this graph with ONNX
Runtime's MatMulNBits (exporters/pipeline/weight_only.py): 8 bits, blocks of 32, int8 compute (accuracy_level 4).
"""

from __future__ import annotations

import inspect

import numpy as np

from exporters.graphs.base import (
    NORM_SOFTMAX,
    TYPICAL_TEXT_TOKENS,
    Case,
    GraphExporter,
    typical_prompt_tokens,
    typical_utterance_tokens,
)
from specs.chunk_policy import ChunkPolicy
from specs.io_spec import CachePair, Dim, DimRange, GraphSpec, ProfileSpec, TensorSpec, TestCase, Tolerance
from specs.precision import Fp32Keep, PrecisionPolicy

PREFILL_TEXT, PREFILL_SPEECH = 12, 25  # prefill case: sos + 12 text + task_id + 25 prompt speech = 39
DEEP_TEXT, DEEP_SPEECH = 40, 258  # deep_decode: a 300-position cache, then one step
EXTEND_TEXT, EXTEND_SPEECH = 5, 15  # bistream_extend: mix_ratio-sized chunk after a cache

# TensorRT caps: TensorRT sizes activation memory for the max shapes of every profile (prefill attention
# scores alone are heads * seq * total * 4 bytes: 60 GB at Qwen2's 32768 positions). A CosyVoice2 segment
# needs sos + text + task + prompt speech (<= 30 s = 750 tokens) + generated (<= 20 x text tokens; the
# frontend splits text into short segments), well under these. Raise with tts-build-trt --max-dim.
TRT_MAX_POSITIONS = 4096
TRT_MAX_PREFILL = 1024
# Profiles are boxes, so total = past + new must hold at each corner: the decode profile takes up to this
# many new positions per call (bistream appends mix_ratio = 5 text + 15 speech); longer extensions of a
# non-empty cache fit no profile and run on ONNX Runtime.
TRT_DECODE_MAX_NEW = 64
INT8 = {"bits": 8, "block_size": 32, "accuracy_level": 4}


def _table(weight) -> np.ndarray:
    return weight.detach().numpy().astype(np.float32)


def llm_sizes(llm) -> dict:
    cfg = llm.llm.model.config
    heads = int(cfg.num_attention_heads)
    return {
        "hidden_size": int(cfg.hidden_size),
        "num_layers": int(cfg.num_hidden_layers),
        "num_heads": heads,
        "num_kv_heads": int(cfg.num_key_value_heads),
        "head_dim": int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads),
        "max_positions": int(cfg.max_position_embeddings),
        "rope_theta": float(cfg.rope_theta),
        "rms_norm_eps": float(cfg.rms_norm_eps),
        "text_vocab_size": int(cfg.vocab_size),
        "speech_token_size": int(llm.speech_token_size),
        "logits_size": int(llm.llm_decoder.out_features),
    }


def cache_names(num_layers: int) -> list[tuple[str, str]]:
    return [(f"past_key_values.{i}.{kv}", f"present.{i}.{kv}") for i in range(num_layers) for kv in ("key", "value")]


def inference_default(llm, name: str) -> float:
    """A length ratio (min/max_token_text_ratio) as the default of upstream's `llm.inference()` argument."""
    return float(inspect.signature(llm.inference).parameters[name].default)


def sampling_facts(model) -> dict:
    """The bundle's sampling parameters (its yaml's ras_sampling arguments) for the runtime's sampler."""
    return {
        "method": "ras_sampling",
        **{k: float(v) if isinstance(v, float) else int(v) for k, v in model.sampling.items()},
    }


def lm_facts(model) -> dict:
    """How the runtime drives this graph: sequence layout, data tables, stop ids, lengths, sampling."""
    llm = model.llm
    s = llm_sizes(llm)
    eos = int(llm.eos_token)
    return {
        **s,
        "logits": "raw llm_decoder output for the last input position; upstream samples from its log_softmax",
        "lm_input": "concat over time of llm.llm_embedding[sos_index], llm.embed_tokens[prompt_text ++ text], "
        "llm.llm_embedding[task_id_index], llm.speech_embedding[prompt_speech_tokens]",
        "next_input": "llm.speech_embedding[token] (one position per decode step)",
        "positions": "contiguous from 0 over lm_input then generated tokens; attention_mask all ones over "
        "past + current positions; the graph adds causality over cache slots",
        "sos_index": int(llm.sos),
        "task_id_index": int(llm.task_id),
        "eos_token": eos,
        "stop_tokens": [int(t) for t in llm.stop_token_ids],
        "fill_token": int(llm.fill_token),
        "min_token_text_ratio": inference_default(llm, "min_token_text_ratio"),
        "max_token_text_ratio": inference_default(llm, "max_token_text_ratio"),
        "length_rule": "N = len(text ids) without the prompt text; the first int(N * min_token_text_ratio) "
        "steps have eos_token masked (only eos, as upstream's sampling_ids; the other stop ids "
        "stay samplable), at most int(N * max_token_text_ratio) steps; stop ids are not yielded",
        "mix_ratio": [int(r) for r in llm.mix_ratio],
        "sampling": sampling_facts(model),
        "data": {
            "embed_tokens": "llm.embed_tokens",
            "speech_embedding": "llm.speech_embedding",
            "llm_embedding": "llm.llm_embedding",
        },
        "kv_cache": {
            "past": "past_key_values.%d.key|value",
            "present": "present.%d.key|value",
            "layout": "(1, num_kv_heads, positions, head_dim), keys after RoPE",
        },
    }


class LLMExporter(GraphExporter):
    name = "llm"
    opset = 18
    trace_case = "bistream_extend"  # past > 0 and several new positions: nothing shape-specific is frozen
    # The full graph is ~1.46 GB of fp32 weights (embedding table excluded): stored as external data so the
    # .onnx stays small and onnxsim (nothing to fold here; it would copy the weights several times) is skipped.
    external_data_threshold = 500_000_000
    # What a family's subclass (exporters/graphs/llm_v3.py) changes: the spec's description and its facts.
    graph_description = (
        "One step of the CosyVoice2 speech-token LM: Qwen2 backbone over inputs_embeds with an "
        "explicit KV cache, then llm_decoder on the last position. Prefill = the whole lm_input "
        "with zero-length past; decode = one speech_embedding row per call."
    )

    def facts(self, model) -> dict:
        return lm_facts(model)

    def spec(self, model) -> GraphSpec:
        s = llm_sizes(model.llm)
        hidden, kv, hd, vocab, max_pos = (
            s["hidden_size"],
            s["num_kv_heads"],
            s["head_dim"],
            s["logits_size"],
            s["max_positions"],
        )
        f = lambda n, shape, doc: TensorSpec(n, "float32", shape, doc)  # noqa: E731
        past, present = [], []
        for name_in, name_out in cache_names(s["num_layers"]):
            what = "keys (after RoPE)" if name_in.endswith("key") else "values"
            past.append(f(name_in, [1, kv, "past_sequence_length", hd], f"cached {what} of earlier positions"))
            present.append(f(name_out, [1, kv, "total_sequence_length", hd], f"past {what} ++ this call's"))
        return GraphSpec(
            graph=self.name,
            description=self.graph_description,
            inputs=[
                f(
                    "inputs_embeds",
                    [1, "sequence_length", hidden],
                    "embeddings of the new positions (see facts lm_input / next_input)",
                ),
                TensorSpec(
                    "attention_mask",
                    "int64",
                    [1, "total_sequence_length"],
                    "1 for every valid cache slot, past and current (all ones for one utterance)",
                ),
                TensorSpec(
                    "position_ids",
                    "int64",
                    [1, "sequence_length"],
                    "RoPE positions of the new positions: past_sequence_length + arange(sequence_length)",
                ),
                *past,
            ],
            outputs=[f("logits", [1, vocab], "llm_decoder scores of the last position (pre-softmax)"), *present],
            dims={
                "sequence_length": Dim(
                    1, 1, max_pos, "new positions in this call (prefill: len(lm_input))", role="sequence"
                ),
                "past_sequence_length": Dim(0, 300, max_pos - 1, "cached positions (0 on the first call)", role="past"),
                "total_sequence_length": Dim(
                    1,
                    301,
                    max_pos,
                    "past_sequence_length + sequence_length",
                    role="total",
                    sum_of=["past_sequence_length", "sequence_length"],
                ),
            },
            tolerances=self.tolerances(s["num_layers"]),
            cases=[
                TestCase(
                    "prefill",
                    f"first call: lm_input of sos + {PREFILL_TEXT} text + task_id + "
                    f"{PREFILL_SPEECH} prompt speech tokens, zero-length past",
                ),
                TestCase("first_decode", "one speech token after the prefill (upstream's cache)"),
                TestCase(
                    "bistream_extend",
                    f"{EXTEND_TEXT} text + {EXTEND_SPEECH} speech positions appended "
                    "to a cache (bistream's mix_ratio chunk)",
                ),
                TestCase("deep_decode", f"one speech token after a {2 + DEEP_TEXT + DEEP_SPEECH}-position cache"),
            ],
            caches=[
                CachePair(i, o, "output of call k is the input of call k+1", "zero-length")
                for i, o in cache_names(s["num_layers"])
            ],
            facts=self.facts(model),
        )

    def profiles(self, spec: GraphSpec, p: ChunkPolicy) -> dict[str, list[ProfileSpec]]:
        """One engine for every chunk mode: prefill (whole lm_input, empty cache) and decode (cache + new)."""
        (seq,), (past,), (total,) = (spec.dims_with_role(r) for r in ("sequence", "past", "total"))
        prefill_max = min(TRT_MAX_PREFILL, spec.dims[seq].max)
        new_max = min(TRT_DECODE_MAX_NEW, prefill_max)
        positions = min(TRT_MAX_POSITIONS, spec.dims[total].max)
        prompt = typical_prompt_tokens(p)
        prefill_opt = 2 + TYPICAL_TEXT_TOKENS + prompt  # sos + text + task_id + prompt speech
        cap_why = f"capped at {positions} positions / {prefill_max} prefill positions (exporters/graphs/llm.py)"
        pre = {
            past: DimRange.pinned(0, "prefill: zero-length KV cache"),
            seq: DimRange(
                1,
                prefill_opt,
                prefill_max,
                f"lm_input; opt: sos + {TYPICAL_TEXT_TOKENS} text + task + {prompt} prompt speech tokens; {cap_why}",
            ),
            total: DimRange(1, prefill_opt, prefill_max, "= sequence length (no past)"),
        }
        past_opt = prefill_opt + typical_utterance_tokens(p) // 2
        dec = {
            past: DimRange(1, past_opt, positions - new_max, f"cached positions; opt: mid-utterance; {cap_why}"),
            seq: DimRange(
                1, 1, new_max, f"one token per decode step; bistream appends mix_ratio chunks (<= {new_max})"
            ),
            total: DimRange(2, past_opt + 1, positions, "= past + sequence length at min, opt and max"),
        }
        return {
            "any": [
                ProfileSpec("prefill", "first call: the whole lm_input, empty cache", pre),
                ProfileSpec("decode", "every later call: cache + new positions", dec),
            ]
        }

    def variants(self, spec: GraphSpec) -> dict[str, PrecisionPolicy]:
        """fp16 for TensorRT plans; weight-only int8 for ONNX Runtime (`tts-export --int8`, graph `llm.int8`)."""
        keep = Fp32Keep(
            ops=NORM_SOFTMAX + ("Sin", "Cos", "Exp"),
            reason="RMSNorm (Pow/ReduceMean/Sqrt) statistics, attention softmax and the RoPE angles",
        )
        logits16 = Tolerance(
            atol=5e-2,
            rtol=2e-2,
            reason=(
                "fp16 unit roundoff 4.9e-4 accumulated over every layer's projections with norms, softmax and RoPE in "
                "fp32; logits absmax ~12. Initial budget, not yet measured on TensorRT; a wrong cache or mask errs "
                "by O(1)"
            ),
        )
        cache16 = Tolerance(
            atol=5e-2,
            rtol=2e-2,
            reason=(
                "fp16 k/v projections (absmax ~2.6) a few layers deep. Initial budget, not yet measured on TensorRT"
            ),
        )
        return {
            "fp16": PrecisionPolicy(
                "fp16",
                "float16",
                self._per_output(spec, logits16, cache16),
                ("tensorrt",),
                keep,
                doc="TensorRT fp16 plans only",
            ),
            "int8": PrecisionPolicy(
                "int8",
                "weight_only",
                self._per_output(spec, *self.int8_tolerances()),
                ("ort",),
                weight_only=dict(INT8),
                doc="MatMul weights int8 in blocks of 32, int8 compute (ONNX Runtime "
                "MatMulNBits, accuracy_level 4); tts-export --int8",
            ),
        }

    @staticmethod
    def _per_output(spec: GraphSpec, logits: Tolerance, cache: Tolerance) -> dict[str, Tolerance]:
        return {o: (logits if o == "logits" else cache) for o in spec.output_names}

    @staticmethod
    def tolerances(num_layers: int) -> dict[str, Tolerance]:
        logits = Tolerance(
            atol=2e-4,
            rtol=1e-4,
            reason=(
                "fp32 reassociation (ORT MatMul/softmax vs torch SDPA) through every layer: measured max 1.3e-5 at "
                "full size (logits absmax ~12), 3.8e-6 tiny; a dropped q/k/v or head bias gives >= 0.6. Position and "
                "mask errors move the logits less on random weights and are caught by the present.* tolerances"
            ),
        )
        cache = Tolerance(
            atol=5e-5,
            rtol=1e-4,
            reason=(
                "keys/values are a few projections deep: measured max 5.1e-6 at full size (absmax ~2.6), 2.1e-7 "
                "tiny; RoPE one position off gives >= 0.23 on the new keys, a non-causal prefill mask >= 0.07 on "
                "layer-1 keys (tiny)"
            ),
        )
        return {"logits": logits, **{o: cache for _, o in cache_names(num_layers)}}

    @staticmethod
    def int8_tolerances() -> tuple[Tolerance, Tolerance]:
        """INT8 variant vs the fp32 PyTorch outputs: quantization noise, not structure (the fp32 graph's
        vectors check the structure it shares)."""
        logits = Tolerance(
            atol=0.75,
            rtol=0,
            reason=(
                "int8 weights (blocks of 32) and int8 activations (accuracy_level 4): measured max 0.24 at full "
                "size on random weights (logits std ~3), 1.1e-3 tiny; broken scales or packing give errors of "
                "several units. Token agreement with the fp32 graph is reported by ci/bench_llm.py"
            ),
        )
        cache = Tolerance(
            atol=0.5, rtol=0, reason=("int8 k/v projections: measured max 0.14 at full size (absmax ~2.6), 3e-3 tiny")
        )
        return logits, cache

    def wrapper(self, model):
        from exporters.rewrites.qwen2_step import Qwen2Step

        return Qwen2Step(model.llm)

    def cases(self, model, seed: int) -> dict[str, Case]:
        import torch

        from exporters.oracles.llm import cache_arrays, lm_input, upstream_step

        llm = model.llm
        s = llm_sizes(llm)
        names = cache_names(s["num_layers"])
        rng = np.random.default_rng(seed)
        text = lambda n: rng.integers(0, min(151643, s["text_vocab_size"]), n)  # noqa: E731  (not special ids)
        speech = lambda n: rng.integers(0, s["speech_token_size"], n)  # noqa: E731
        empty = [np.zeros((1, s["num_kv_heads"], 0, s["head_dim"]), np.float32)] * len(names)
        out: dict[str, Case] = {}

        def speech_row():  # the next input after a generated token
            return llm.speech_embedding.weight[int(speech(1)[0])].detach().reshape(1, 1, -1)

        def step(case, xs, past, cache):
            """Upstream forward on xs after `cache` (whose arrays are `past`); records the case."""
            past_len, seq = past[0].shape[2], xs.shape[1]
            logits, cache = upstream_step(llm, xs, cache)
            presents = cache_arrays(cache)
            feed = {
                "inputs_embeds": xs.detach().numpy().astype(np.float32),
                "attention_mask": np.ones((1, past_len + seq), np.int64),
                "position_ids": np.arange(past_len, past_len + seq, dtype=np.int64)[None],
                **{n_in: a for (n_in, _), a in zip(names, past)},
            }
            out[case] = (feed, {"logits": logits, **{n_out: a for (_, n_out), a in zip(names, presents)}})
            return presents, cache

        past, cache = step("prefill", lm_input(llm, text(PREFILL_TEXT), speech(PREFILL_SPEECH)), empty, None)
        past, cache = step("first_decode", speech_row(), past, cache)
        x = lm_input(llm, text(EXTEND_TEXT), speech(EXTEND_SPEECH))  # keep the text and speech rows only
        step("bistream_extend", torch.cat([x[:, 1 : 1 + EXTEND_TEXT], x[:, 2 + EXTEND_TEXT :]], dim=1), past, cache)
        _, cache = upstream_step(llm, lm_input(llm, text(DEEP_TEXT), speech(DEEP_SPEECH)), None)
        step("deep_decode", speech_row(), cache_arrays(cache), cache)
        return out

    @staticmethod
    def speech_embedding_doc(llm) -> str:
        return (
            "speech token embedding (speech_token_size + 3, hidden): prompt speech tokens "
            "and each generated token's next input"
        )

    def embedding_tables(self, model) -> dict:
        """The text and speech embedding tables every family's LLM step reads its inputs from (pack data)."""
        llm = model.llm
        return {
            "llm.embed_tokens": (
                _table(llm.llm.model.model.embed_tokens.weight),
                "Qwen2 text embedding (text_vocab_size, hidden): rows for prompt_text ++ text ids",
            ),
            "llm.speech_embedding": (_table(llm.speech_embedding.weight), self.speech_embedding_doc(llm)),
        }

    def data(self, model):
        tables = self.embedding_tables(model)
        tables["llm.llm_embedding"] = (_table(model.llm.llm_embedding.weight), "row 0: sos, row 1: task_id (2, hidden)")
        return tables
