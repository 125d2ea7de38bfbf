"""The CosyVoice 1 speech-token LM (`TransformerLM`, cosyvoice/llm/llm.py) as two graphs:

- `llm.text_encoder`, run once per request: `text_ids` (prompt_text ⧺ text) -> `text_h` =
  text_encoder_affine_layer(text_encoder(text_embedding(ids))) through upstream's own `TransformerLM.encode`
  (ConformerEncoder called with decoding_chunk_size 1: with the shipped static_chunk_size 1 the mask is causal),
  and the speaker row `spk_h` = spk_embed_affine_layer(F.normalize(embedding)). Upstream leaves the speaker row
  out when the embedding is empty (instruct mode, `embedding.shape[0] == 0`): the graph always takes a
  (1, spk_dim) embedding and the runtime drops `spk_h` then (zeros give the layer's bias, no NaN).
- `llm`, one step of the 14-block rel-pos TransformerEncoder + `llm_decoder` for every call: prefill (the whole
  lm_input after an empty cache) and decode (one speech_embedding row), told apart only by the input shapes.
  The attention cache is upstream's own layout, K‖V concatenated on the last axis, (num_blocks, heads, Tc,
  2 d_k); `cnn_cache` is always empty for this encoder (no conv module) and is not exposed.

The step wrapper calls upstream's `forward_chunk(xs, offset=Tc, required_cache_size=-1, att_cache, cnn_cache=
empty, att_mask)` as `TransformerLM.inference` does (its offset always equals the cached positions, so the
rel-pos table is sliced for Tc + L positions at offset 0). The mask is causal over cache slots, built in the
graph from the shapes: for the prefill (Tc = 0) it is upstream's tril(L, L); for a decode step (L = 1) all ones,
what upstream's ones(1, 1, 1) broadcasts to. The rel-pos table (`pe`, 2 * 5000 - 1 rows, built at module init)
is frozen into both graphs, so they take at most 5000 positions, the most upstream's own slicing supports.
"""

from __future__ import annotations

import numpy as np

from exporters.graphs.base import (
    NORM_SOFTMAX,
    TYPICAL_TEXT_TOKENS,
    Case,
    GraphExporter,
    typical_prompt_tokens,
    typical_utterance_tokens,
)
from exporters.graphs.llm import INT8, TRT_MAX_POSITIONS, TRT_MAX_PREFILL, _table, inference_default, sampling_facts
from specs.chunk_policy import ChunkPolicy
from specs.io_spec import CachePair, Dim, DimRange, GraphSpec, ProfileSpec, TensorSpec, TestCase, Tolerance
from specs.precision import Fp32Keep, PrecisionPolicy

TEXT_ENCODER = "llm.text_encoder"
# test vectors: prompt text, text and prompt speech lengths of the zero-shot case, and of the deep-cache case
PROMPT_TEXT, TEXT, PROMPT_SPEECH = 6, 12, 25
DEEP_TEXT, DEEP_SPEECH = 40, 250
EXTEND = 5  # speech rows appended after a cache in the trace case


def v1_sizes(llm) -> dict:
    """Sizes of the v1 LM, read from the built modules."""
    enc, text_enc = llm.llm, llm.text_encoder
    att = enc.encoders[0].self_attn
    return {
        "hidden_size": int(llm.llm_input_size),
        "num_blocks": len(enc.encoders),
        "num_heads": int(att.h),
        "head_dim": int(att.d_k),
        "speech_token_size": int(llm.speech_token_size),
        "logits_size": int(llm.llm_decoder.out_features),
        "text_vocab_size": int(llm.text_embedding.num_embeddings),
        "spk_embed_dim": int(llm.spk_embed_affine_layer.in_features),
        # EspnetRelPositionalEncoding.position_encoding slices 2 S - 1 rows around the table's centre
        "max_positions": int(enc.embed.pos_enc.pe.size(1)) // 2 + 1,
        "text_max_positions": int(text_enc.embed.pos_enc.pe.size(1)) // 2 + 1,
        "text_encoder_blocks": len(text_enc.encoders),
        "text_encoder_static_chunk_size": int(text_enc.static_chunk_size),
    }


def lm_facts_v1(model) -> dict:
    """How the runtime drives the two graphs: sequence layout, data tables, stop id, lengths, sampling."""
    llm = model.llm
    s = v1_sizes(llm)
    eos = int(llm.eos_token)
    return {
        **s,
        "logits": "raw llm_decoder output for the last input position; upstream samples from its log_softmax",
        "text_encoder": TEXT_ENCODER,
        "lm_input": "concat over time of llm.llm_embedding[sos_index], spk_h (only with a speaker embedding), "
        "text_h of llm.text_encoder(prompt_text ++ text), llm.llm_embedding[task_id_index], "
        "llm.speech_embedding[prompt_speech_tokens]",
        "speaker_row": "optional: spk_h of llm.text_encoder when a speaker embedding is given (zero-shot, SFT, "
        "cross-lingual); left out when there is none (instruct mode; upstream's embedding of shape (0, 192)), "
        "the graph's embedding input then takes zeros and its spk_h is ignored",
        "next_input": "llm.speech_embedding[token] (one position per decode step)",
        "positions": "att_cache holds every earlier position (upstream's offset = cached positions); the rel-pos "
        "table is sliced for past + current positions; causal over cache slots (prefill: tril, decode: all)",
        "sos_index": int(llm.sos),
        "task_id_index": int(llm.task_id),
        "eos_token": eos,
        "stop_tokens": [eos],  # TransformerLM.inference breaks on eos_token only
        "min_len_masked_token": int(llm.speech_token_size),  # sampling_ids' index: eos in v1
        "min_token_text_ratio": inference_default(llm, "min_token_text_ratio"),
        "max_token_text_ratio": inference_default(llm, "max_token_text_ratio"),
        "length_rule": "N = len(text ids) without the prompt text; the first int(N * min_token_text_ratio) "
        "steps have eos_token masked, at most int(N * max_token_text_ratio) steps; eos is not yielded",
        "sampling": sampling_facts(model),
        "data": {"speech_embedding": "llm.speech_embedding", "llm_embedding": "llm.llm_embedding"},
        "att_cache": {
            "input": "att_cache",
            "output": "att_cache_out",
            "layout": "(num_blocks, num_heads, positions, 2 * head_dim): keys then values on the last axis, "
            "as upstream's forward_chunk keeps them",
        },
    }


def _keep(reason: str) -> Fp32Keep:
    return Fp32Keep(ops=NORM_SOFTMAX + ("ReduceL2",), reason=reason)


class TextEncoderV1Exporter(GraphExporter):
    name = TEXT_ENCODER
    opset = 18
    trace_case = "zero_shot"

    def spec(self, model) -> GraphSpec:
        s = v1_sizes(model.llm)
        hidden, n_max = s["hidden_size"], s["text_max_positions"]
        f32 = lambda n, shape, doc: TensorSpec(n, "float32", shape, doc)  # noqa: E731
        return GraphSpec(
            graph=self.name,
            description=(
                "CosyVoice 1 LM inputs computed once per request: text_encoder_affine_layer(text_encoder("
                "text_embedding(prompt_text ++ text))) with the encoder's causal chunk mask, and the speaker "
                "row spk_embed_affine_layer(F.normalize(embedding)). The runtime lays them into lm_input "
                "(facts of the `llm` graph) and leaves spk_h out without a speaker."
            ),
            inputs=[
                TensorSpec(
                    "text_ids",
                    "int64",
                    [1, "text_length"],
                    f"prompt_text ++ text token ids (whisper multilingual tokenizer), each < {s['text_vocab_size']}",
                ),
                f32(
                    "embedding",
                    [1, s["spk_embed_dim"]],
                    "speaker x-vector (campplus or spk2info), not normalised; zeros when there is no speaker",
                ),
            ],
            outputs=[
                f32("text_h", [1, "text_length", hidden], "encoded text positions of lm_input"),
                f32("spk_h", [1, 1, hidden], "the speaker position of lm_input (dropped without a speaker)"),
            ],
            dims={
                "text_length": Dim(
                    1,
                    TYPICAL_TEXT_TOKENS,
                    n_max,
                    f"prompt text + text ids; at most {n_max}: the rel-pos table frozen into the graph",
                    role="sequence",
                )
            },
            tolerances={
                "text_h": Tolerance(
                    atol=1e-4,
                    rtol=1e-4,
                    reason="fp32 reassociation (ORT MatMul, LayerNorm, softmax vs torch) through the rel-pos "
                    "conformer blocks and the affine layer: measured max 7.2e-7 on the tiny bundle (|text_h| up "
                    "to ~2.1); full size not measured yet. A full instead of the causal mask moves text_h by "
                    "5.5e-2, a rel-pos table shifted by one row by 2.6e-3 (tiny, 18 ids)",
                ),
                "spk_h": Tolerance(
                    atol=1e-5,
                    rtol=1e-5,
                    reason="one L2 normalisation and a Linear(spk_dim -> hidden): measured max 4.5e-8 (tiny)",
                ),
            },
            cases=[
                TestCase(
                    "zero_shot",
                    f"{PROMPT_TEXT} prompt text + {TEXT} text ids and a speaker: upstream's lm_input of a "
                    "zero-shot request (TransformerLM.inference)",
                ),
                TestCase("single_id", "one text id, no prompt (SFT), a speaker"),
                TestCase("long_text", f"{DEEP_TEXT} text ids after {PROMPT_TEXT} prompt ids, a speaker"),
            ],
            facts={
                "text_vocab_size": s["text_vocab_size"],
                "spk_embed_dim": s["spk_embed_dim"],
                "hidden_size": hidden,
                "text_encoder_blocks": s["text_encoder_blocks"],
                "text_encoder_static_chunk_size": s["text_encoder_static_chunk_size"],
                "speaker_row": lm_facts_v1(model)["speaker_row"],
            },
        )

    def profiles(self, spec: GraphSpec, p: ChunkPolicy) -> dict[str, list[ProfileSpec]]:
        (n,) = spec.dims_with_role("sequence")
        top = min(TRT_MAX_PREFILL, spec.dims[n].max)
        why = f"prompt text + text ids; opt: a typical segment; capped at {top} (exporters/graphs/llm.py)"
        return {
            "any": [ProfileSpec("request", "one call per request", {n: DimRange(1, TYPICAL_TEXT_TOKENS, top, why)})]
        }

    def variants(self, spec: GraphSpec) -> dict[str, PrecisionPolicy]:
        budget = (
            "fp16 unit roundoff 4.9e-4 over the conformer blocks with norms and softmax fp32. Initial budget, not yet "
            "measured on TensorRT; catches O(1) errors (a broken engine) only"
        )
        tol = {o: Tolerance(atol=5e-2, rtol=2e-2, reason=budget) for o in spec.output_names}
        keep = _keep("LayerNorm statistics, the rel-pos attention softmax and the x-vector's L2 norm")
        return {"fp16": PrecisionPolicy("fp16", "float16", tol, ("tensorrt",), keep, doc="TensorRT fp16 plans only")}

    def wrapper(self, model):
        import torch
        import torch.nn.functional as F

        class TextEncoderV1(torch.nn.Module):
            def __init__(self, llm):
                super().__init__()
                self.llm = llm

            def forward(self, text_ids, embedding):
                llm = self.llm
                x = llm.text_embedding(text_ids)
                lengths = torch._shape_as_tensor(x)[1:2]  # one unpadded request: every position is valid
                # add_optional_chunk_mask's `.item()` fix-up of all-false mask rows is frozen at trace time; it is
                # never taken here (every row of a chunk mask keeps its diagonal)
                text_h, _ = llm.encode(x, lengths)
                spk_h = llm.spk_embed_affine_layer(F.normalize(embedding, dim=1)).unsqueeze(1)
                return text_h, spk_h

        return TextEncoderV1(model.llm)

    def cases(self, model, seed: int) -> dict[str, Case]:
        from exporters.oracles.llm_v1 import upstream_run

        llm = model.llm
        s = v1_sizes(llm)
        rng = np.random.default_rng(seed)
        out: dict[str, Case] = {}
        for case, n_prompt, n_text in (
            ("zero_shot", PROMPT_TEXT, TEXT),
            ("single_id", 0, 1),
            ("long_text", PROMPT_TEXT, DEEP_TEXT),
        ):
            prompt = rng.integers(0, s["text_vocab_size"], n_prompt)
            text = rng.integers(0, s["text_vocab_size"], n_text)
            emb = rng.standard_normal((1, s["spk_embed_dim"])).astype(np.float32)
            # upstream's lm_input, captured from its first forward_chunk call: [sos, spk, text_h, task, ...]
            xs = upstream_run(llm, text, prompt, (), emb, max_tokens=1).calls[0].xs
            ids = np.concatenate([prompt, text]).astype(np.int64)[None]
            out[case] = (
                {"text_ids": ids, "embedding": emb},
                {"text_h": xs[:, 2 : 2 + ids.shape[1]], "spk_h": xs[:, 1:2]},
            )
        return out


class LLMV1Exporter(GraphExporter):
    name = "llm"
    opset = 18
    trace_case = "extend"  # past > 0 and several new positions: nothing shape-specific is frozen
    # Always external data (~0.8 GB of fp32 weights at full size), so onnxsim is skipped at every size and the tiny
    # graph has the full-size structure: onnxsim folds the Linear layers' MatMul + Add into Gemm, which the
    # weight-only int8 variant would leave fp32 (it quantizes MatMul weights only).
    external_data_threshold = 0

    def spec(self, model) -> GraphSpec:
        s = v1_sizes(model.llm)
        blocks, heads, width = s["num_blocks"], s["num_heads"], 2 * s["head_dim"]
        hidden, vocab, max_pos = s["hidden_size"], s["logits_size"], s["max_positions"]
        f32 = lambda n, shape, doc: TensorSpec(n, "float32", shape, doc)  # noqa: E731
        rel = "the rel-pos table frozen into the graph covers"
        return GraphSpec(
            graph=self.name,
            description=(
                "One step of the CosyVoice 1 speech-token LM (TransformerLM): rel-pos TransformerEncoder "
                "forward_chunk over inputs_embeds after att_cache (K‖V per block), then llm_decoder on the last "
                "position. Prefill = the whole lm_input with a zero-length cache; decode = one speech_embedding "
                "row per call."
            ),
            inputs=[
                f32(
                    "inputs_embeds",
                    [1, "sequence_length", hidden],
                    "embeddings of the new positions (see facts lm_input / next_input)",
                ),
                f32(
                    "att_cache",
                    [blocks, heads, "past_sequence_length", width],
                    "keys ‖ values of every earlier position, per block and head (zero-length on the first call)",
                ),
            ],
            outputs=[
                f32("logits", [1, vocab], "llm_decoder scores of the last position (pre-softmax)"),
                f32("att_cache_out", [blocks, heads, "total_sequence_length", width], "att_cache ++ this call's"),
            ],
            dims={
                "sequence_length": Dim(
                    1, 1, max_pos, f"new positions (prefill: len(lm_input)); {rel} {max_pos}", role="sequence"
                ),
                "past_sequence_length": Dim(0, 300, max_pos - 1, "cached positions (0 on the first call)", role="past"),
                "total_sequence_length": Dim(
                    1,
                    301,
                    max_pos,
                    f"past_sequence_length + sequence_length; {rel} {max_pos}",
                    role="total",
                    sum_of=["past_sequence_length", "sequence_length"],
                ),
            },
            tolerances=self.tolerances(),
            cases=[
                TestCase(
                    "prefill",
                    f"upstream's first call of a zero-shot request: sos, speaker, {PROMPT_TEXT} + {TEXT} text, "
                    f"task_id, {PROMPT_SPEECH} prompt speech tokens; zero-length cache",
                ),
                TestCase("first_decode", "upstream's second call of that request: one speech token after the prefill"),
                TestCase(
                    "prefill_no_speaker",
                    "upstream's first call of an instruct request (no speaker row, no prompt speech)",
                ),
                TestCase(
                    "deep_decode",
                    f"upstream's second call of a request with {DEEP_TEXT} text ids and {DEEP_SPEECH} prompt speech "
                    "tokens: one token after a ~300-position cache",
                ),
                TestCase(
                    "extend",
                    f"{EXTEND} positions after the zero-shot prefill cache, upstream forward_chunk with the causal "
                    "over-cache mask (a call upstream's v1 loop never makes; the trace case)",
                ),
            ],
            caches=[
                CachePair("att_cache", "att_cache_out", "output of call k is the input of call k+1", "zero-length")
            ],
            facts=lm_facts_v1(model),
        )

    @staticmethod
    def tolerances() -> dict[str, Tolerance]:
        return {
            "logits": Tolerance(
                atol=2e-4,
                rtol=1e-4,
                reason=(
                    "fp32 reassociation (ORT MatMul/softmax/LayerNorm vs torch) through every block: measured max "
                    "9.5e-7 on the tiny bundle's 5 cases (logits absmax ~2.2); full size not measured yet (the v2 "
                    "step's budget, measured 1.3e-5 there). Structural errors move the tiny model's logits by "
                    "1.7e-3 (non-causal prefill) to 5.6e-3 (decode cache one position short); a rel-pos table "
                    "shifted by one row by 2.1e-3 (decode) / 3.7e-3 (prefill), a dropped speaker row by 4.6e-3"
                ),
            ),
            "att_cache_out": Tolerance(
                atol=5e-5,
                rtol=1e-4,
                reason=(
                    "keys/values are a few projections deep: measured max 7.2e-7 on the tiny bundle (absmax ~2.2); "
                    "a non-causal prefill mask moves block-1 keys/values by 7.1e-2, a rel-pos table shifted by one "
                    "row the new positions' by 1.2e-3 (decode) / 5.7e-3 (prefill) (tiny)"
                ),
            ),
        }

    def profiles(self, spec: GraphSpec, p: ChunkPolicy) -> dict[str, list[ProfileSpec]]:
        """One engine for every chunk mode: prefill (whole lm_input, empty cache) and decode (cache + 1)."""
        (seq,), (past,), (total,) = (spec.dims_with_role(r) for r in ("sequence", "past", "total"))
        prefill_max = min(TRT_MAX_PREFILL, spec.dims[seq].max)
        positions = min(TRT_MAX_POSITIONS, spec.dims[total].max)
        prompt = typical_prompt_tokens(p)
        prefill_opt = 3 + TYPICAL_TEXT_TOKENS + prompt  # sos + speaker + text + task_id + prompt speech
        cap_why = f"capped at {positions} positions / {prefill_max} prefill positions (exporters/graphs/llm.py)"
        pre = {
            past: DimRange.pinned(0, "prefill: zero-length cache"),
            seq: DimRange(
                1,
                prefill_opt,
                prefill_max,
                f"lm_input; opt: sos + speaker + {TYPICAL_TEXT_TOKENS} text + task + {prompt} prompt speech tokens; "
                f"{cap_why}",
            ),
            total: DimRange(1, prefill_opt, prefill_max, "= sequence length (no past)"),
        }
        past_opt = prefill_opt + typical_utterance_tokens(p) // 2
        dec = {
            past: DimRange(1, past_opt, positions - 1, f"cached positions; opt: mid-utterance; {cap_why}"),
            seq: DimRange.pinned(1, "one token per decode step (CosyVoice 1 has no bistream)"),
            total: DimRange(2, past_opt + 1, positions, "= past + 1 at min, opt and max"),
        }
        return {
            "any": [
                ProfileSpec("prefill", "first call: the whole lm_input, empty cache", pre),
                ProfileSpec("decode", "every later call: cache + one token", dec),
            ]
        }

    def variants(self, spec: GraphSpec) -> dict[str, PrecisionPolicy]:
        """fp16 for TensorRT plans; weight-only int8 for ONNX Runtime (`tts-export --int8`, graph `llm.int8`)."""
        fp16 = Tolerance(
            atol=5e-2,
            rtol=2e-2,
            reason=(
                "fp16 unit roundoff 4.9e-4 accumulated over every block's projections with norms and softmax in "
                "fp32. Initial budget (v2's), not yet measured on TensorRT; a wrong cache or mask errs by O(1)"
            ),
        )
        logits8 = Tolerance(
            atol=0.75,
            rtol=0,
            reason=(
                "int8 weights (blocks of 32) and int8 activations (accuracy_level 4), the head kept fp32 (a Gemm): "
                "measured max 1.7e-2 on the tiny bundle (logits absmax ~2.2); v2's budget (its full-size max 0.24). "
                "Broken scales or packing give errors of several units"
            ),
        )
        cache8 = Tolerance(
            atol=0.5,
            rtol=0,
            reason="int8 k/v projections: measured max 2.7e-2 on the tiny bundle (absmax ~2.2); v2's budget (full-size "
            "v2 max 0.14)",
        )
        per = lambda logits, cache: {"logits": logits, "att_cache_out": cache}  # noqa: E731
        return {
            "fp16": PrecisionPolicy(
                "fp16",
                "float16",
                per(fp16, fp16),
                ("tensorrt",),
                _keep("LayerNorm statistics and the rel-pos attention softmax"),
                doc="TensorRT fp16 plans only",
            ),
            "int8": PrecisionPolicy(
                "int8",
                "weight_only",
                per(logits8, cache8),
                ("ort",),
                weight_only=dict(INT8),
                doc="MatMul weights int8 in blocks of 32, int8 compute (ONNX Runtime MatMulNBits, accuracy_level 4); "
                "tts-export --int8",
            ),
        }

    def wrapper(self, model):
        import torch

        from exporters.oracles.llm_v1 import causal_over_cache

        class StepV1(torch.nn.Module):
            def __init__(self, llm):
                super().__init__()
                self.llm = llm

            def forward(self, inputs_embeds, att_cache):
                past, length = att_cache.size(2), inputs_embeds.size(1)  # traced sizes
                y, cache, _ = self.llm.llm.forward_chunk(
                    inputs_embeds,
                    offset=past,
                    required_cache_size=-1,
                    att_cache=att_cache,
                    cnn_cache=torch.zeros(0, 0, 0, 0),
                    att_mask=causal_over_cache(past, length),
                )
                return self.llm.llm_decoder(y[:, -1]), cache

        return StepV1(model.llm)

    def cases(self, model, seed: int) -> dict[str, Case]:
        from exporters.oracles.llm_v1 import upstream_chunk, upstream_run

        llm = model.llm
        s = v1_sizes(llm)
        rng = np.random.default_rng(seed)
        text = lambda n: rng.integers(0, s["text_vocab_size"], n)  # noqa: E731
        speech = lambda n: rng.integers(0, s["speech_token_size"], n)  # noqa: E731
        speaker = lambda: rng.standard_normal((1, s["spk_embed_dim"])).astype(np.float32)  # noqa: E731
        empty = np.zeros((s["num_blocks"], s["num_heads"], 0, 2 * s["head_dim"]), np.float32)

        def case(call):
            cache = call.att_cache if call.att_cache.shape[2] else empty  # upstream's first call: zeros((0,0,0,0))
            return {"inputs_embeds": call.xs, "att_cache": cache}, {
                "logits": call.logits,
                "att_cache_out": call.att_cache_out,
            }

        zero_shot = upstream_run(llm, text(TEXT), text(PROMPT_TEXT), speech(PROMPT_SPEECH), speaker(), max_tokens=2)
        instruct = upstream_run(llm, text(TEXT), text(PROMPT_TEXT), (), None, max_tokens=1)
        deep = upstream_run(llm, text(DEEP_TEXT), text(PROMPT_TEXT), speech(DEEP_SPEECH), speaker(), max_tokens=2)
        rows = llm.speech_embedding.weight.detach().numpy()[speech(EXTEND)][None].astype(np.float32)
        extend = upstream_chunk(llm, rows, zero_shot.calls[0].att_cache_out)
        return {
            "prefill": case(zero_shot.calls[0]),
            "first_decode": case(zero_shot.calls[1]),
            "prefill_no_speaker": case(instruct.calls[0]),
            "deep_decode": case(deep.calls[1]),
            "extend": case(extend),
        }

    def data(self, model):
        llm = model.llm
        n = int(llm.speech_token_size)
        return {
            "llm.speech_embedding": (
                _table(llm.speech_embedding.weight),
                f"speech token embedding ({n}, hidden): prompt speech tokens and each generated token's next input",
            ),
            "llm.llm_embedding": (_table(llm.llm_embedding.weight), "row 0: sos, row 1: task_id (2, hidden)"),
        }
