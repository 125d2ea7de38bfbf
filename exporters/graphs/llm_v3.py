"""`llm` for Fun-CosyVoice3 (`CosyVoice3LM`): the CosyVoice2 step graph (exporters/graphs/llm.py: Qwen2 backbone
with an explicit KV cache + `llm_decoder` on the last position, same I/O, profiles and precision policies),
with the deltas of the v3 LM (cosyvoice/llm/llm.py::CosyVoice3LM, which inherits `Qwen2LM.inference`):

- no `llm_embedding` table: sos = speech_token_size + 0 and task_id = speech_token_size + 2 are rows of
  `speech_embedding` (speech_token_size + 200 rows), which the pack ships as it ships the v2 table;
- head `llm_decoder` = Linear(hidden, speech_token_size + 200) without bias; stop ids: all 200 ids from
  speech_token_size; eos_token = speech_token_size + 1, fill_token = speech_token_size + 3;
- before min_len upstream's `sampling_ids` masks index speech_token_size, which is sos in v3, not eos
  (shared notes, upstream-inference.md pitfall P5): the facts name the masked id separately
  (`min_len_masked_token`), so a runtime can reproduce upstream instead of guessing from eos_token;
- `Qwen2LM.inference` asserts that <|endofprompt|> is among prompt_text ++ text for CosyVoice3LM.

The head is exported as a Gemm with a zero bias (`zero_bias_head`): torch exports a bias-free Linear as
MatMul, which the weight-only int8 variant would quantize; as a Gemm it stays fp32 there, as the v2 head
does (exporters/pipeline/weight_only.py quantizes MatMul weights only). Adding +0.0 changes no fp32 value.
"""

from __future__ import annotations

import dataclasses

from exporters.graphs.llm import LLMExporter, lm_facts
from specs.io_spec import Tolerance

# `Qwen2LM.inference`: "NOTE temporary hardcode, 151646 is <|endofprompt|> token", asserted in prompt_text ++ text
# for CosyVoice3LM. An upstream constant, not a size of the model (tests/test_v3_llm.py checks upstream's assert).
ENDOFPROMPT_TOKEN = 151646


def zero_bias_head(linear):
    """The same Linear with an explicit zero bias (a copy; the upstream module is not touched)."""
    import torch

    head = torch.nn.Linear(linear.in_features, linear.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(linear.weight)
        head.bias.zero_()
        if linear.bias is not None:
            head.bias.copy_(linear.bias)
    return head.eval()


DEFAULT_INSTRUCTION = "You are a helpful assistant.<|endofprompt|>"


def lm_facts_v3(model) -> dict:
    """v2's facts (exporters/graphs/llm.py::lm_facts, read from the v3 modules) with the v3 layout and rules."""
    llm = model.llm
    facts = lm_facts(model)
    masked = int(llm.speech_token_size)  # TransformerLM.sampling_ids: weighted_scores[self.speech_token_size]
    facts.update(
        {
            "lm_input": "concat over time of llm.speech_embedding[sos_index], llm.embed_tokens[prompt_text ++ "
            "text], llm.speech_embedding[task_id_index], llm.speech_embedding[prompt_speech_tokens]",
            "min_len_masked_token": masked,
            "length_rule": "N = len(text ids) without the prompt text; the first int(N * min_token_text_ratio) "
            "steps have min_len_masked_token masked (upstream's sampling_ids masks index speech_token_size: "
            f"{masked}, the sos id in CosyVoice3, not eos_token {int(llm.eos_token)}; every other stop id stays "
            "samplable), at most int(N * max_token_text_ratio) steps; stop ids are not yielded",
            "required_text_token": ENDOFPROMPT_TOKEN,
            "required_text_token_rule": "<|endofprompt|> must occur in prompt_text ++ text (upstream asserts it)",
            # upstream's own examples open the prompt text with this instruction (cosyvoice/utils/common.py);
            # the runtime puts it before the prompt text when neither the prompt text nor the text has the token
            "default_instruction": DEFAULT_INSTRUCTION,
            "data": {"embed_tokens": "llm.embed_tokens", "speech_embedding": "llm.speech_embedding"},
        }
    )
    return facts


class LLMV3Exporter(LLMExporter):
    name = "llm"
    graph_description = (
        "One step of the Fun-CosyVoice3 speech-token LM (CosyVoice3LM): Qwen2 backbone over inputs_embeds with "
        "an explicit KV cache, then llm_decoder (no bias) on the last position. Prefill = the whole lm_input "
        "(sos and task_id are speech_embedding rows) with zero-length past; decode = one speech_embedding row "
        "per call."
    )

    def facts(self, model) -> dict:
        return lm_facts_v3(model)

    @staticmethod
    def tolerances(num_layers: int) -> dict[str, Tolerance]:
        """v2's budgets (the same Qwen2 backbone and step rewrite), with the v3 measurements in the reasons."""
        return LLMV3Exporter._same_budgets(
            LLMExporter.tolerances(num_layers),
            "measured max 8.3e-7 on the tiny v3 bundle (its 4 cases and 31 greedy steps; logits absmax ~2.3); "
            "full-size v3 not measured yet",
            "measured max 1.5e-7 on the tiny v3 bundle (absmax ~0.6); full-size v3 not measured yet",
        )

    @staticmethod
    def int8_tolerances() -> tuple[Tolerance, Tolerance]:
        budgets = LLMV3Exporter._same_budgets(
            dict(zip(("logits", "cache"), LLMExporter.int8_tolerances())),
            "v3: measured max 2.0e-4 on the tiny v3 bundle (head kept fp32 as in v2: see zero_bias_head)",
            "v3: measured max 4.2e-3 on the tiny v3 bundle",
        )
        return budgets["logits"], budgets["cache"]

    @staticmethod
    def _same_budgets(base: dict[str, Tolerance], logits_note: str, cache_note: str) -> dict[str, Tolerance]:
        """The CosyVoice2 tolerances (exporters/graphs/llm.py) unchanged, their reasons extended with a note."""
        out = {}
        for name, tol in base.items():
            note = logits_note if name == "logits" else cache_note
            out[name] = dataclasses.replace(tol, reason=f"CosyVoice2 budget: {tol.reason}. {note}")
        return out

    def wrapper(self, model):
        step = super().wrapper(model)
        if model.llm.llm_decoder.bias is None:
            step.head = zero_bias_head(model.llm.llm_decoder)
        return step

    @staticmethod
    def speech_embedding_doc(llm) -> str:
        n = int(llm.speech_token_size)
        return (
            f"speech token embedding (speech_token_size + {llm.speech_embedding.num_embeddings - n}, hidden): "
            f"prompt speech tokens, each generated token's next input, and the sos (row {int(llm.sos)}) and "
            f"task_id (row {int(llm.task_id)}) positions"
        )

    def data(self, model):
        return self.embedding_tables(model)  # no llm_embedding table: sos and task_id are speech_embedding rows
