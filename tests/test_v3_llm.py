"""The Fun-CosyVoice3 `llm` graph (exporters/graphs/llm_v3.py) on the tiny v3 bundle: exported through the real
pack pipeline (fp32 + the INT8 variant), spec facts equal to upstream CosyVoice3LM's ids and tables, and
decoding with ONNX Runtime driven only by the pack (graph, data tables, facts) vs upstream's own
`CosyVoice3LM.inference` loop: greedy tokens and log-probs, sampled tokens with the same injected sampler
and seed, the min/max length and stop rules (upstream masks index speech_token_size, sos in v3, before
min_len), and INT8 greedy agreement.

The runtime's LLMStage is CosyVoice2's (it reads llm_embedding): the decode loop here is a small test driver
over runtime/llm_stage.py's steppers that follows the facts alone."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

pytestmark = pytest.mark.oracle

N_GREEDY = 30


@pytest.fixture(scope="module")
def v3_pack(tiny_v3_bundle, tmp_path_factory):
    import exporters.graphs
    from exporters.graphs.llm_v3 import LLMV3Exporter
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack

    out = tmp_path_factory.mktemp("llm-v3") / "pack"
    with pytest.MonkeyPatch.context() as mp:  # module scope: the function-scoped fixture cannot be used here
        mp.setitem(exporters.graphs.REGISTRY_V3, "llm", LLMV3Exporter)
        result = export_pack(
            tiny_v3_bundle, out, ["llm"], ExportOptions(seed=0, int8=True, log=lambda m: None), log=lambda m: None
        )
    return out, result


@pytest.fixture(scope="module")
def inputs(tiny_v3_model):
    """prompt_text (ending in <|endofprompt|>, as upstream's examples), text, prompt speech tokens; ids drawn
    below the Qwen2 special ids and the speech vocabulary (sizes from the model)."""
    from exporters.graphs.llm_v3 import ENDOFPROMPT_TOKEN

    llm = tiny_v3_model.llm
    text_ids = min(ENDOFPROMPT_TOKEN, int(llm.llm.model.config.vocab_size))
    rng = np.random.default_rng(11)
    prompt_text = np.concatenate([rng.integers(0, text_ids, 6), [ENDOFPROMPT_TOKEN]])
    return SimpleNamespace(
        text=rng.integers(0, text_ids, 25),  # min_len 50 > N_GREEDY
        prompt_text=prompt_text,
        prompt_speech=rng.integers(0, int(llm.speech_token_size), 37),
    )


class Driver:
    """Non-bistream decoding on a pack's v3 `llm` graph from the pack alone: lm_input, length rule and stop ids as
    the spec facts state them; the KV cache in runtime/llm_stage.py's steppers."""

    def __init__(self, root, graph="llm", io_binding=False):
        from backends.ort import OrtRunner
        from specs.pack import Pack

        pack = Pack.open(root)
        entry = pack.graph(graph)
        self.spec = entry.spec()
        self.facts = f = self.spec.facts
        self.session = OrtRunner(entry.onnx_path, self.spec)
        self.cache_inputs = [n for n in self.spec.input_names if n.startswith("past_key_values.")]
        self.cache_outputs = [n for n in self.spec.output_names if n.startswith("present.")]
        self.embed_tokens = np.asarray(pack.data(f["data"]["embed_tokens"]))
        self.speech_embedding = np.asarray(pack.data(f["data"]["speech_embedding"]))
        self.io_binding = io_binding

    def lm_input(self, text, prompt_text, prompt_speech) -> np.ndarray:
        f, table = self.facts, self.speech_embedding
        ids = np.concatenate([prompt_text, text]).astype(np.int64)
        rows = [
            table[f["sos_index"]][None],
            self.embed_tokens[ids],
            table[f["task_id_index"]][None],
            table[np.asarray(prompt_speech, np.int64)],
        ]
        return np.concatenate(rows).astype(np.float32)[None]

    def stepper(self, capacity):
        from runtime.llm_stage import BoundStepper, PlainStepper

        return BoundStepper(self, capacity) if self.io_binding else PlainStepper(self)

    def generate(self, text, prompt_text, prompt_speech, sampler, record=None):
        """Tokens one by one; `record` (a list) gets (logits, log-probs handed to the sampler) per step."""
        from runtime.sampling import log_softmax

        f = self.facts
        x = self.lm_input(text, prompt_text, prompt_speech)
        min_len, max_len = (int(len(text) * f[k]) for k in ("min_token_text_ratio", "max_token_text_ratio"))
        step, out = self.stepper(x.shape[1] + max_len), []
        for i in range(max_len):
            logits = step(x if i == 0 else self.speech_embedding[out[-1]][None, None])[0].copy()
            logp = log_softmax(logits)
            if i < min_len:
                logp[f["min_len_masked_token"]] = -np.inf
            if record is not None:
                record.append((logits, logp.copy()))
            token = int(sampler(logp, out))
            if token in f["stop_tokens"]:
                break
            yield token
            out.append(token)


def upstream(model, inputs, sampler, logps=None):
    """Upstream CosyVoice3LM.inference with the sampler injected; records the scores it is handed."""
    from exporters.oracles.llm import upstream_decode

    def recording(scores, decoded):
        if logps is not None:
            logps.append(scores.copy())
        return sampler(scores, decoded)

    return upstream_decode(model.llm, inputs.text, inputs.prompt_text, inputs.prompt_speech, sampler=recording)


def take(tokens, n):
    return list(itertools.islice(tokens, n))


def test_export_checks_every_case_and_the_int8_variant(v3_pack):
    from backends.ort import check_onnx_file
    from specs.pack import Pack

    root, result = v3_pack
    assert [g.name for g in result.graphs] == ["llm", "llm.int8"]
    for g in result.graphs:
        assert {c.label.split("/")[1] for c in g.comparisons} == {
            "prefill",
            "first_decode",
            "bistream_extend",
            "deep_decode",
        }
        assert all(c.passed for c in g.comparisons), [c.line() for c in g.comparisons if not c.passed]
    pack = Pack.open(root)
    pack.verify()
    assert pack.family == "cosyvoice3"
    assert pack.graph("llm.int8").precision == "int8"
    for name in ("llm", "llm.int8"):  # the shipped vectors, re-run from the pack
        g = pack.graph(name)
        results = check_onnx_file(g.onnx_path, g.spec(), g.vectors())
        assert results and all(c.passed for c in results), [c.line() for c in results if not c.passed]


def test_spec_facts_and_tables_are_cosyvoice3s(v3_pack, tiny_v3_model):
    from exporters.graphs.llm_v3 import ENDOFPROMPT_TOKEN
    from exporters.model.facts import chunk_policy
    from specs.errors import ToolError
    from specs.pack import Pack

    llm = tiny_v3_model.llm
    pack = Pack.open(v3_pack[0])
    spec = pack.graph("llm").spec()
    f = spec.facts
    n = int(llm.speech_token_size)
    assert "CosyVoice3" in spec.description
    # upstream CosyVoice3LM.__init__: sos, eos, task_id, fill = n + 0..3, 200 stop ids from n, no llm_embedding
    assert not hasattr(llm, "llm_embedding") and llm.llm_decoder.bias is None
    assert (f["sos_index"], f["eos_token"], f["task_id_index"], f["fill_token"]) == (n, n + 1, n + 2, n + 3)
    assert (f["sos_index"], f["task_id_index"], f["eos_token"]) == (llm.sos, llm.task_id, llm.eos_token)
    assert f["stop_tokens"] == list(llm.stop_token_ids) == list(range(n, llm.llm_decoder.out_features))
    assert f["min_len_masked_token"] == n == f["sos_index"]  # pitfall P5: not eos_token
    assert f["required_text_token"] == ENDOFPROMPT_TOKEN
    assert f["logits_size"] == llm.llm_decoder.out_features == llm.speech_embedding.num_embeddings
    assert spec.outputs[0].shape == [1, f["logits_size"]]
    assert f["num_layers"] == llm.llm.model.config.num_hidden_layers
    assert f["data"] == {"embed_tokens": "llm.embed_tokens", "speech_embedding": "llm.speech_embedding"}
    np.testing.assert_array_equal(pack.data("llm.speech_embedding"), llm.speech_embedding.weight.detach().numpy())
    np.testing.assert_array_equal(
        pack.data("llm.embed_tokens"), llm.llm.model.model.embed_tokens.weight.detach().numpy()
    )
    with pytest.raises(ToolError):
        pack.data("llm.llm_embedding")
    assert spec.profiles and set(spec.precisions) == {"fp16", "int8"}
    assert chunk_policy(tiny_v3_model) == pack.chunk_policy


def test_int8_variant_keeps_the_head_fp32(v3_pack, tiny_v3_model):
    """The bias-free head is exported as a Gemm (zero bias) so weight-only int8 leaves it fp32, as in v2."""
    import onnx
    from onnx import numpy_helper

    root = v3_pack[0]
    m = onnx.load(str(root / "llm.int8.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    (head,) = [node for node in m.graph.node if "logits" in node.output]
    assert head.op_type == "Gemm"
    w = inits[head.input[1]]
    trans_b = next((a.i for a in head.attribute if a.name == "transB"), 0)
    np.testing.assert_array_equal(w if trans_b else w.T, tiny_v3_model.llm.llm_decoder.weight.detach().numpy())
    assert not inits[head.input[2]].any()
    assert any(node.op_type == "MatMulNBits" for node in m.graph.node)


def test_lm_input_equals_upstream_inference(v3_pack, tiny_v3_model, inputs, monkeypatch):
    """Upstream's own lm_input (captured from CosyVoice3LM.inference) == the oracle's == the pack driver's."""
    from exporters.oracles.llm import lm_input

    llm = tiny_v3_model.llm
    seen = {}

    def capture(lm_input, sampling, min_len, max_len, uuid):
        seen.update(lm_input=lm_input.detach().numpy().copy(), min_len=min_len, max_len=max_len)
        yield from ()

    monkeypatch.setattr(llm, "inference_wrapper", capture)
    assert list(upstream(tiny_v3_model, inputs, lambda s, d: 0)) == []
    oracle = lm_input(llm, np.concatenate([inputs.prompt_text, inputs.text]), inputs.prompt_speech).numpy()
    ours = Driver(v3_pack[0]).lm_input(inputs.text, inputs.prompt_text, inputs.prompt_speech)
    np.testing.assert_array_equal(oracle, seen["lm_input"])
    np.testing.assert_array_equal(ours, seen["lm_input"])
    f = Driver(v3_pack[0]).facts
    n = len(inputs.text)
    assert (seen["min_len"], seen["max_len"]) == (
        int(n * f["min_token_text_ratio"]),
        int(n * f["max_token_text_ratio"]),
    )


def test_upstream_requires_endofprompt(tiny_v3_model, inputs):
    from exporters.graphs.llm_v3 import ENDOFPROMPT_TOKEN

    no_eop = SimpleNamespace(
        **{**vars(inputs), "prompt_text": inputs.prompt_text[inputs.prompt_text != ENDOFPROMPT_TOKEN]}
    )
    with pytest.raises(AssertionError, match="endofprompt"):
        next(upstream(tiny_v3_model, no_eop, lambda s, d: 0))


@pytest.mark.parametrize("io_binding", [False, True], ids=["plain_run", "io_binding"])
def test_greedy_tokens_and_logprobs_equal_upstream(v3_pack, tiny_v3_model, inputs, io_binding):
    from runtime.sampling import greedy

    driver = Driver(v3_pack[0], io_binding=io_binding)
    steps, ref_lp = [], []
    ours = take(driver.generate(inputs.text, inputs.prompt_text, inputs.prompt_speech, greedy, steps), N_GREEDY)
    ref = take(upstream(tiny_v3_model, inputs, greedy, ref_lp), N_GREEDY)
    assert len(ref) == N_GREEDY and ours == ref
    tol = driver.spec.tolerances["logits"]
    assert len(steps) == len(ref_lp) == N_GREEDY
    for (logits, a), e in zip(steps, ref_lp):
        assert np.array_equal(np.isinf(a), np.isinf(e))  # the same id masked (min_len) on both sides
        finite = np.isfinite(e)
        # log_softmax = logits - logsumexp(logits), and |d logsumexp| <= max |d logits|: twice the logits budget
        bound = 2 * (tol.atol + tol.rtol * np.abs(logits).max())
        assert np.abs(a[finite] - e[finite]).max() <= bound


def test_teacher_forced_logits_equal_upstream_steps(v3_pack, tiny_v3_model, inputs):
    """Raw logits of every step along the greedy sequence: the graph vs upstream forward_one_step +
    llm_decoder (exporters/oracles/llm.py::upstream_step), under the spec's logits tolerance."""
    from exporters.oracles.llm import lm_input, upstream_step
    from runtime.llm_stage import PlainStepper
    from runtime.sampling import greedy

    llm = tiny_v3_model.llm
    driver = Driver(v3_pack[0])
    tokens = take(driver.generate(inputs.text, inputs.prompt_text, inputs.prompt_speech, greedy), N_GREEDY)
    step = PlainStepper(driver)
    x = lm_input(llm, np.concatenate([inputs.prompt_text, inputs.text]), inputs.prompt_speech)
    logits, cache = upstream_step(llm, x, None)
    ours = step(x.numpy())
    tol = driver.spec.tolerances["logits"]
    assert len(tokens) == N_GREEDY
    for token in [None, *tokens]:
        if token is not None:
            logits, cache = upstream_step(llm, llm.speech_embedding.weight[token].detach().reshape(1, 1, -1), cache)
            ours = step(driver.speech_embedding[token][None, None])
        assert np.all(np.abs(ours - logits) <= tol.atol + tol.rtol * np.abs(logits))


def test_sampled_decode_equals_upstream_with_the_same_sampler_and_seed(v3_pack, tiny_v3_model, inputs):
    """Whole utterances (to a stop id or max_len) with ras_sampling (the spec's parameters), same seed on both
    sides. On random weights the 199 samplable stop ids end plain RAS runs within a few tokens, so a second
    sampler (RAS over the speech ids only) runs each utterance to max_len."""
    from runtime.sampling import RasParams, RasSampler

    driver = Driver(v3_pack[0])
    f = driver.facts
    params = RasParams.from_facts(f["sampling"])
    short = SimpleNamespace(**{**vars(inputs), "text": inputs.text[:5]})
    max_len = int(len(short.text) * f["max_token_text_ratio"])

    def speech_only(seed):
        ras = RasSampler(seed, params)
        return lambda scores, decoded: ras(scores[: min(f["stop_tokens"])], decoded)

    for seed in (0, 1):
        for make, long in ((lambda s: RasSampler(s, params), False), (speech_only, True)):
            ours = list(driver.generate(short.text, short.prompt_text, short.prompt_speech, make(seed)))
            ref = list(upstream(tiny_v3_model, short, make(seed)))
            assert ours == ref and len(ours) >= 1
            if long:
                assert len(ours) == max_len and len(set(ours)) > 10


def test_min_len_masks_speech_token_size_and_max_len_caps(v3_pack, tiny_v3_model, inputs):
    """Upstream's v3 length rule as the facts state it: before min_len only min_len_masked_token (sos) is
    masked, so eos stops at once (pitfall P5); the masked id stops at min_len; max_len caps."""
    driver = Driver(v3_pack[0])
    f = driver.facts
    masked, eos, first_stop = f["min_len_masked_token"], f["eos_token"], min(f["stop_tokens"])
    short = SimpleNamespace(**{**vars(inputs), "text": inputs.text[:4]})
    min_len, max_len = (int(4 * f[k]) for k in ("min_token_text_ratio", "max_token_text_ratio"))

    def masked_when_allowed(scores, decoded):
        return masked if np.isfinite(scores[masked]) else int(np.argmax(scores[:first_stop]))

    def always_eos(scores, decoded):
        return eos

    def never_stop(scores, decoded):
        return int(np.argmax(scores[:first_stop]))

    for sampler, expected_len in ((masked_when_allowed, min_len), (always_eos, 0), (never_stop, max_len)):
        ours = list(driver.generate(short.text, short.prompt_text, short.prompt_speech, sampler))
        ref = list(upstream(tiny_v3_model, short, sampler))
        assert len(ours) == expected_len and ours == ref


def test_int8_variant_greedy_agreement(v3_pack, inputs):
    """Teacher-forced on the fp32 greedy sequence: the int8 graph's argmax over speech ids agrees on most steps."""
    from runtime.sampling import greedy

    fp32, int8 = Driver(v3_pack[0]), Driver(v3_pack[0], graph="llm.int8")
    ref = take(fp32.generate(inputs.text, inputs.prompt_text, inputs.prompt_speech, greedy), 2 * N_GREEDY)
    x = int8.lm_input(inputs.text, inputs.prompt_text, inputs.prompt_speech)
    step = int8.stepper(x.shape[1] + len(ref))
    logits, agree = step(x), 0
    speech_ids = min(fp32.facts["stop_tokens"])  # ref holds speech tokens only: rank those
    for token in ref:
        agree += int(np.argmax(logits[0][:speech_ids])) == token
        logits = step(int8.speech_embedding[token][None, None])
    assert len(ref) == 2 * N_GREEDY and agree >= 0.9 * len(ref)
