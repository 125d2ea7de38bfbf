"""The `llm` graph (tiny bundle): export + vectors, and runtime/llm_stage.py decoding vs upstream PyTorch's
own `Qwen2LM.inference` loop: greedy tokens equal, sampled tokens equal with the same injected sampler and
seed, min/max length and stop handling, IO-bound cache vs plain runs, and the INT8 variant."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

pytestmark = pytest.mark.oracle

TEXT = np.random.default_rng(11).integers(0, 151643, 25)  # min_len 50: greedy 50 never meets eos
PROMPT_TEXT = np.random.default_rng(12).integers(0, 151643, 6)
PROMPT_SPEECH = np.random.default_rng(13).integers(0, 6561, 37)


@pytest.fixture(scope="module")
def llm_pack(tiny_bundle, tmp_path_factory):
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack

    out = tmp_path_factory.mktemp("llm") / "pack"
    result = export_pack(
        tiny_bundle,
        out,
        ["llm"],
        ExportOptions(seed=0, int8=True, log=lambda m: None),
        random_init={"size": "tiny", "seed": 0},
        log=lambda m: None,
    )
    return out, result


@pytest.fixture(scope="module")
def stage(llm_pack):
    from runtime.llm_stage import LLMStage

    return LLMStage(llm_pack[0])


def take(tokens, n):
    return list(itertools.islice(tokens, n))


def test_export_checks_every_case_and_the_int8_variant(llm_pack):
    from specs.pack import Pack

    root, result = llm_pack
    assert [g.name for g in result.graphs] == ["llm", "llm.int8"]
    for g in result.graphs:
        cases = {c.label.split("/")[1] for c in g.comparisons}
        assert cases == {"prefill", "first_decode", "bistream_extend", "deep_decode"}
        assert all(c.passed for c in g.comparisons), [c.line() for c in g.comparisons if not c.passed]
    pack = Pack.open(root)
    pack.verify()
    spec = pack.graph("llm").spec()
    n = spec.facts["num_layers"]
    assert spec.input_names[:3] == ["inputs_embeds", "attention_mask", "position_ids"]
    assert [(c.input, c.output) for c in spec.caches][:2] == [
        ("past_key_values.0.key", "present.0.key"),
        ("past_key_values.0.value", "present.0.value"),
    ]
    assert len(spec.caches) == 2 * n and spec.output_names[0] == "logits"
    assert pack.graph("llm.int8").precision == "int8"
    assert pack.data("llm.embed_tokens").shape == (spec.facts["text_vocab_size"], spec.facts["hidden_size"])
    assert pack.data("llm.speech_embedding").shape[0] == spec.facts["logits_size"]


def test_pack_vectors_pass_on_onnxruntime(llm_pack):
    from backends.ort import check_onnx_file
    from specs.pack import Pack

    pack = Pack.open(llm_pack[0])
    for name in ("llm", "llm.int8"):
        g = pack.graph(name)
        results = check_onnx_file(g.onnx_path, g.spec(), g.vectors())
        assert results and all(c.passed for c in results), [c.line() for c in results if not c.passed]


def test_lm_input_equals_upstream_layout(stage, tiny_model):
    from exporters.oracles.llm import lm_input

    ours = stage.lm_input(TEXT, PROMPT_TEXT, PROMPT_SPEECH)
    ref = lm_input(tiny_model.llm, np.concatenate([PROMPT_TEXT, TEXT]), PROMPT_SPEECH).numpy()
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("io_binding", [True, False], ids=["io_binding", "plain_run"])
def test_greedy_50_tokens_equal_upstream(llm_pack, tiny_model, io_binding):
    from exporters.oracles.llm import upstream_decode
    from runtime.llm_stage import LLMStage
    from runtime.sampling import greedy

    ours = take(
        LLMStage(llm_pack[0], io_binding=io_binding).generate(TEXT, PROMPT_TEXT, PROMPT_SPEECH, sampler=greedy), 50
    )
    ref = take(upstream_decode(tiny_model.llm, TEXT, PROMPT_TEXT, PROMPT_SPEECH), 50)
    assert len(ref) == 50 and ours == ref


def test_sampled_decode_equals_upstream_with_the_same_sampler_and_seed(stage, tiny_model):
    """Whole utterance (to a stop id or max_len) with ras_sampling: upstream's loop with our sampler
    injected vs the ORT stage, same seed."""
    from exporters.oracles.llm import upstream_decode
    from runtime.sampling import RasSampler

    text = TEXT[:5]  # max_len 100 steps
    for seed in (0, 1):
        ours = list(stage.generate(text, PROMPT_TEXT, PROMPT_SPEECH, sampler=RasSampler(seed, stage.params)))
        ref = list(
            upstream_decode(tiny_model.llm, text, PROMPT_TEXT, PROMPT_SPEECH, sampler=RasSampler(seed, stage.params))
        )
        assert ours == ref and len(set(ours)) > 10


def test_min_len_masks_eos_and_max_len_caps(stage, tiny_model):
    from exporters.oracles.llm import upstream_decode

    eos, stops = stage.facts["eos_token"], stage.facts["stop_tokens"]
    text = TEXT[:4]  # min_len 8, max_len 80

    def eos_when_allowed(scores, decoded):  # picks eos as soon as it is not masked
        return eos if np.isfinite(scores[eos]) else int(np.argmax(scores[: min(stops)]))

    def never_stop(scores, decoded):
        return int(np.argmax(scores[: min(stops)]))

    for sampler, expected_len in ((eos_when_allowed, 8), (never_stop, 80)):
        ours = list(stage.generate(text, PROMPT_TEXT, PROMPT_SPEECH, sampler=sampler))
        ref = list(upstream_decode(tiny_model.llm, text, PROMPT_TEXT, PROMPT_SPEECH, sampler=sampler))
        assert len(ours) == expected_len and ours == ref


def test_io_binding_reuses_its_buffers(stage):
    """150 decode steps: the IO-bound stepper gives the plain-run logits and cache, writes the cache into its
    two preallocated banks, and Python-side memory (numpy included; tracemalloc) does not grow with the
    cache (130 more positions would be 66.6 KB of tiny cache)."""
    from runtime.llm_stage import BoundStepper, PlainStepper

    x = stage.lm_input(TEXT, PROMPT_TEXT, PROMPT_SPEECH)
    bound, plain = BoundStepper(stage, x.shape[1] + 150), PlainStepper(stage)
    banks = [a.ctypes.data for bank in bound.banks for a in bank]
    np.testing.assert_array_equal(bound(x), plain(x))
    tokens = np.random.default_rng(0).integers(0, 6561, 150)
    tracemalloc.start()
    try:
        for i, t in enumerate(tokens):
            if i == 20:
                before = tracemalloc.get_traced_memory()[0]
            row = stage.speech_embedding[t][None, None]
            np.testing.assert_array_equal(bound(row), plain(row))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 16_000, grown
    assert [a.ctypes.data for bank in bound.banks for a in bank] == banks
    assert bound.length == plain.length == x.shape[1] + 150
    for b, p in zip(bound.cache(), plain.cache()):
        np.testing.assert_array_equal(b, p)


def test_int8_variant_greedy_agreement(llm_pack):
    """Teacher-forced on the fp32 greedy sequence: the int8 graph's argmax agrees on most steps."""
    from runtime.llm_stage import LLMStage
    from runtime.sampling import greedy

    fp32, int8 = LLMStage(llm_pack[0]), LLMStage(llm_pack[0], graph="llm.int8")
    ref = take(fp32.generate(TEXT, PROMPT_TEXT, PROMPT_SPEECH, sampler=greedy), 60)
    x = int8.lm_input(TEXT, PROMPT_TEXT, PROMPT_SPEECH)
    step = int8.stepper(x.shape[1] + len(ref))
    logits = step(x)
    agree = 0
    speech_ids = min(fp32.facts["stop_tokens"])  # ref holds speech tokens only: rank those
    for token in ref:
        agree += int(np.argmax(logits[0][:speech_ids])) == token
        logits = step(int8.speech_embedding[token][None, None])
    assert agree >= 0.9 * len(ref)
