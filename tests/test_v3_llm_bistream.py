"""Bi-streaming text input on Fun-CosyVoice3: the runtime's BistreamDecoder on the exported v3 LLM vs upstream
`CosyVoice3LM.inference_bistream`: the instruction up to <|endofprompt|> right after sos, the rest of the prompt
text mixed with the prompt speech, sos (speech_token_size) masked while ignore_eos."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import needs_oracle
from tests.test_llm_bistream import upstream_bistream_with

pytestmark = needs_oracle
ENDOFPROMPT = 151646


@pytest.fixture(scope="module")
def llm_stage(tiny_v3_bundle, tmp_path_factory):
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack
    from runtime.llm_stage import LLMStage

    out = tmp_path_factory.mktemp("pack-v3-llm") / "pack"
    export_pack(tiny_v3_bundle, out, ["llm"], ExportOptions(seed=0, simplify=False, log=lambda m: None),
                log=lambda m: None)  # fmt: skip
    return LLMStage(out)


class SpeechOnly:
    """Both sides' sampler: ras_sampling over speech ids, plus fill while text is mixed in, and eos (forced) in
    the final phase once `eos_after` tokens were decoded. Random weights put real mass on the other special ids,
    which upstream answers with ValueError ('should not get token'), and rarely rank eos in the top k. The phase
    is what upstream's sampling_ids tells the sampler: speech_token_size is masked (-inf) only while text is
    being mixed in (ignore_eos=True)."""

    def __init__(self, seed, params, speech_size, fill, eos, eos_after):
        from runtime.sampling import ras_sample

        self.rng, self.params, self.ras = np.random.default_rng(seed), params, ras_sample
        self.speech_size, self.fill, self.eos, self.eos_after = speech_size, fill, eos, eos_after

    def __call__(self, scores, decoded):
        scores = np.array(scores, dtype=np.float32)
        mixing = bool(np.isneginf(scores[self.speech_size]))
        if not mixing and len(decoded) >= self.eos_after:
            return self.eos
        scores[[i for i in range(self.speech_size, scores.shape[0]) if not (mixing and i == self.fill)]] = -np.inf
        return self.ras(scores, decoded, self.rng, self.params)


@pytest.mark.parametrize("n_prompt_speech", [0, 40])
def test_v3_bistream_tokens_equal_upstream(llm_stage, tiny_v3_model, n_prompt_speech):
    from runtime.llm_bistream import BistreamDecoder

    f = llm_stage.facts
    rng = np.random.default_rng(5)
    text = [int(t) for t in rng.integers(0, 151000, 23)]
    instruction = [int(t) for t in rng.integers(0, 151000, 6)] + [ENDOFPROMPT]
    prompt_text = instruction + [int(t) for t in rng.integers(0, 151000, 7)]
    prompt_speech = [int(t) for t in rng.integers(0, 6561, n_prompt_speech)]
    make = lambda: SpeechOnly(11, llm_stage.params, f["speech_token_size"], f["fill_token"], f["eos_token"], 120)  # noqa: E731
    expected = upstream_bistream_with(tiny_v3_model.llm, text, prompt_text, prompt_speech, make())
    dec = BistreamDecoder(llm_stage, prompt_text, prompt_speech, sampler=make())
    for i in range(0, len(text), 4):  # text arrives 4 tokens at a time
        dec.push(text[i : i + 4])
    dec.close()
    got = [t for t in dec.tokens() if isinstance(t, int)]
    assert len(expected) >= 100 and got == expected  # eos forced at 120 decoded


def test_v3_bistream_without_the_instruction_is_refused(llm_stage):
    from runtime.llm_bistream import BistreamDecoder
    from specs.errors import ToolError

    with pytest.raises(ToolError, match="has no token 151646"):
        BistreamDecoder(llm_stage, [1, 2, 3], [])
