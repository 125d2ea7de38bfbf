"""The CosyVoice 1 LM graphs (exporters/graphs/llm_v1.py: `llm.text_encoder`, `llm` + its INT8 variant) on the tiny
v1 bundle, exported through the real pack pipeline, and runtime/llm_v1.py's V1LLMStage driven by the pack alone vs
upstream's own `TransformerLM.inference` loop (exporters/oracles/llm_v1.py records its forward_chunk calls): lm_input,
tokens and per-step log-probs with the same injected sampler in zero-shot, SFT and instruct modes, bound vs plain
stepping, the min_len eos mask and max_len cap."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytestmark = pytest.mark.oracle

GRAPHS = ["llm.text_encoder", "llm"]


@pytest.fixture(scope="module")
def v1_pack(tiny_v1_bundle, tmp_path_factory):
    import exporters.graphs
    from exporters.graphs.llm_v1 import LLMV1Exporter, TextEncoderV1Exporter
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack

    out = tmp_path_factory.mktemp("llm-v1") / "pack"
    with pytest.MonkeyPatch.context() as mp:  # module scope: the function-scoped fixture cannot be used here
        mp.setitem(exporters.graphs.REGISTRY_V1, "llm.text_encoder", TextEncoderV1Exporter)
        mp.setitem(exporters.graphs.REGISTRY_V1, "llm", LLMV1Exporter)
        result = export_pack(
            tiny_v1_bundle, out, GRAPHS, ExportOptions(seed=0, int8=True, log=lambda m: None), log=lambda m: None
        )
    return out, result


@pytest.fixture(scope="module")
def stage(v1_pack):
    from runtime.llm_v1 import V1LLMStage

    return V1LLMStage(v1_pack[0])


@pytest.fixture(scope="module")
def modes(tiny_v1_model):
    """Upstream's three LLM modes (frontend_zero_shot / _sft / _instruct), ids and sizes drawn from the model."""
    llm = tiny_v1_model.llm
    rng = np.random.default_rng(7)
    text_ids = lambda n: rng.integers(0, llm.text_embedding.num_embeddings, n)  # noqa: E731
    spk = int(llm.spk_embed_affine_layer.in_features)
    text = text_ids(6)  # min_len 12, max_len 120
    return {
        "zero_shot": SimpleNamespace(
            text=text,
            prompt_text=text_ids(5),
            prompt_speech=rng.integers(0, llm.speech_token_size, 30),
            embedding=rng.standard_normal((1, spk)).astype(np.float32),
        ),
        "sft": SimpleNamespace(text=text, prompt_text=(), prompt_speech=(), embedding=rng.standard_normal(spk)),
        # instruct ids in the prompt-text slot, no prompt speech, the speaker row removed (upstream's (0, 192))
        "instruct": SimpleNamespace(
            text=text, prompt_text=text_ids(8), prompt_speech=(), embedding=np.zeros((0, spk), np.float32)
        ),
    }


def upstream(model, m, sampler, logps=None, max_tokens=None):
    """Upstream TransformerLM.inference with `sampler` injected; `logps` gets the scores it is handed."""
    from exporters.oracles.llm_v1 import upstream_run

    def recording(scores, decoded):
        if logps is not None:
            logps.append(scores.copy())
        return sampler(scores, decoded)

    return upstream_run(model.llm, m.text, m.prompt_text, m.prompt_speech, m.embedding, recording, max_tokens)


def ours(stage, m, sampler, logps=None):
    def recording(scores, decoded):
        if logps is not None:
            logps.append(scores.copy())
        return sampler(scores, decoded)

    return list(stage.generate(m.text, m.prompt_text, m.prompt_speech, sampler=recording, embedding=m.embedding))


def no_repeat(scores, decoded):
    """Deterministic: the best id not among the last 10 decoded (eos included), so the cache sees varied tokens."""
    s = np.array(scores, np.float32)
    s[list(set(decoded[-10:]))] = -np.inf
    return int(np.argmax(s))


def test_export_passes_every_case_and_the_int8_variant(v1_pack):
    from backends.ort import check_onnx_file
    from specs.pack import Pack

    root, result = v1_pack
    assert [g.name for g in result.graphs] == ["llm.text_encoder", "llm", "llm.int8"]
    cases = {
        "llm.text_encoder": {"zero_shot", "single_id", "long_text"},
        "llm": {"prefill", "first_decode", "prefill_no_speaker", "deep_decode", "extend"},
    }
    for g in result.graphs:
        assert {c.label.split("/")[1] for c in g.comparisons} == cases[g.name.replace(".int8", "")]
        assert all(c.passed for c in g.comparisons), [c.line() for c in g.comparisons if not c.passed]
    pack = Pack.open(root)
    pack.verify()
    assert pack.family == "cosyvoice1"
    for name in ("llm.text_encoder", "llm", "llm.int8"):  # the shipped vectors, re-run from the pack
        g = pack.graph(name)
        results = check_onnx_file(g.onnx_path, g.spec(), g.vectors())
        assert results and all(c.passed for c in results), [c.line() for c in results if not c.passed]


def test_spec_facts_and_tables_are_upstreams(v1_pack, tiny_v1_model):
    from specs.pack import Pack

    llm = tiny_v1_model.llm
    pack = Pack.open(v1_pack[0])
    spec, f = pack.graph("llm").spec(), pack.graph("llm").spec().facts
    att = llm.llm.encoders[0].self_attn
    n = int(llm.speech_token_size)
    assert (f["sos_index"], f["task_id_index"], f["eos_token"]) == (llm.sos, llm.task_id, llm.eos_token) == (0, 1, n)
    assert f["stop_tokens"] == [n] and f["min_len_masked_token"] == n
    assert f["logits_size"] == llm.llm_decoder.out_features == n + 1
    assert (f["num_blocks"], f["num_heads"], f["head_dim"]) == (len(llm.llm.encoders), att.h, att.d_k)
    assert spec.input("att_cache").shape == [f["num_blocks"], f["num_heads"], "past_sequence_length", 2 * att.d_k]
    assert [(c.input, c.output) for c in spec.caches] == [("att_cache", "att_cache_out")]
    assert f["text_encoder"] == "llm.text_encoder" and pack.has_graph(f["text_encoder"])
    assert f["sampling"] == {"method": "ras_sampling", **tiny_v1_model.sampling}
    np.testing.assert_array_equal(pack.data(f["data"]["speech_embedding"]), llm.speech_embedding.weight.detach())
    np.testing.assert_array_equal(pack.data(f["data"]["llm_embedding"]), llm.llm_embedding.weight.detach())
    # the rel-pos table frozen in the graphs: 2 * max_positions - 1 rows, as upstream's position_encoding slices
    assert llm.llm.embed.pos_enc.pe.size(1) == 2 * spec.dims["total_sequence_length"].max - 1
    for name in GRAPHS:
        s = pack.graph(name).spec()
        assert s.profiles == {"any": s.profiles["any"]} and set(s.precisions) >= {"fp16"}
    assert set(spec.precisions) == {"fp16", "int8"}
    assert spec.profiles["any"][1].dims["sequence_length"].max == 1  # decode: one token per call


def test_int8_variant_keeps_the_head_fp32(v1_pack, tiny_v1_model):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(v1_pack[0] / "llm.int8.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    (head,) = [node for node in m.graph.node if "logits" in node.output]
    assert head.op_type == "Gemm"
    w = inits[head.input[1]]
    trans_b = next((a.i for a in head.attribute if a.name == "transB"), 0)
    np.testing.assert_array_equal(w if trans_b else w.T, tiny_v1_model.llm.llm_decoder.weight.detach().numpy())
    assert sum(node.op_type == "MatMulNBits" for node in m.graph.node) >= 6 * len(tiny_v1_model.llm.llm.encoders)


@pytest.mark.parametrize("mode", ["zero_shot", "sft", "instruct"])
def test_lm_input_equals_upstream(stage, tiny_v1_model, modes, mode):
    """V1LLMStage.lm_input vs the lm_input upstream's inference hands its first forward_chunk call: the table rows
    exactly, the text encoder rows within the graph's tolerances; the speaker row only with a speaker."""
    m = modes[mode]
    ref = upstream(tiny_v1_model, m, no_repeat, max_tokens=1).calls[0].xs
    got = stage.lm_input(m.text, m.prompt_text, m.prompt_speech, m.embedding)
    spk = int(mode != "instruct")
    n_text = len(m.text) + len(m.prompt_text)
    assert got.shape == ref.shape == (1, 1 + spk + n_text + 1 + len(m.prompt_speech), stage.facts["hidden_size"])
    table = np.r_[0, 1 + spk + n_text : got.shape[1]]  # sos, task_id, prompt speech
    np.testing.assert_array_equal(got[:, table], ref[:, table])
    tol = stage.text_session.spec.tolerances
    for out, rows in (("spk_h", slice(1, 1 + spk)), ("text_h", slice(1 + spk, 1 + spk + n_text))):
        t = tol[out]
        assert np.all(np.abs(got[:, rows] - ref[:, rows]) <= t.atol + t.rtol * np.abs(ref[:, rows])), out


@pytest.mark.parametrize("mode", ["zero_shot", "sft", "instruct"])
def test_tokens_and_logprobs_equal_upstream(v1_pack, tiny_v1_model, modes, mode):
    """Whole utterances with the same deterministic sampler on both sides: identical tokens, and each step's
    log-probs (as handed to the sampler, eos masked before min_len) within the logits budget; bound (I/O binding)
    and plain stepping give identical tokens and log-probs."""
    from runtime.llm_v1 import V1LLMStage

    m = modes[mode]
    ref_lp, runs = [], {}
    run = upstream(tiny_v1_model, m, no_repeat, ref_lp)
    ref = run.tokens
    for io_binding in (True, False):
        st = V1LLMStage(v1_pack[0], io_binding=io_binding)
        assert st.io_binding == io_binding
        lp: list[np.ndarray] = []
        runs[io_binding] = (ours(st, m, no_repeat, lp), lp)
    (tokens, lp), (plain_tokens, plain_lp) = runs[True], runs[False]
    assert tokens == ref == plain_tokens and len(set(ref)) > 20
    assert len(lp) == len(ref_lp) == len(plain_lp)
    tol = st.spec.tolerances["logits"]
    for a, p, e, call in zip(lp, plain_lp, ref_lp, run.calls):
        np.testing.assert_array_equal(a, p)
        assert np.array_equal(np.isinf(a), np.isinf(e))  # the same id masked on both sides
        finite = np.isfinite(e)
        # log_softmax = logits - logsumexp(logits), |d logsumexp| <= max |d logits|: twice the logits budget
        bound = 2 * (tol.atol + tol.rtol * np.abs(call.logits).max())
        assert np.abs(a[finite] - e[finite]).max() <= bound


def test_sampled_decode_equals_upstream_with_the_same_sampler_and_seed(stage, tiny_v1_model, modes):
    """ras_sampling with the spec's parameters, seeded alike on both sides, to eos or max_len."""
    from runtime.sampling import RasSampler

    m = modes["zero_shot"]
    for seed in (0, 1):
        got = ours(stage, m, RasSampler(seed, stage.params))
        ref = upstream(tiny_v1_model, m, RasSampler(seed, stage.params)).tokens
        assert got == ref and len(set(got)) > 10


def test_min_len_masks_eos_and_max_len_caps(stage, tiny_v1_model, modes):
    """eos is masked (and so never sampled) for the first int(N * 2) steps and stops at once after; without eos
    the utterance runs int(N * 20) steps; upstream agrees on both."""
    eos = stage.facts["eos_token"]
    m = modes["zero_shot"]
    min_len, max_len = stage.length_limits(len(m.text))
    assert (min_len, max_len) == (2 * len(m.text), 20 * len(m.text))  # upstream's default ratios

    def eos_when_allowed(scores, decoded):
        return eos if np.isfinite(scores[eos]) else no_repeat(scores[:eos], decoded)

    def never_stop(scores, decoded):
        return no_repeat(scores[:eos], decoded)

    for sampler, expected in ((eos_when_allowed, min_len), (never_stop, max_len)):
        lp: list[np.ndarray] = []
        got = ours(stage, m, sampler, lp)
        assert got == upstream(tiny_v1_model, m, sampler).tokens and len(got) == expected
        assert all(np.isneginf(s[eos]) for s in lp[:min_len]) and not np.isinf(lp[min_len][eos])


def test_int8_variant_agrees_with_fp32_teacher_forced(v1_pack, modes):
    """Along the fp32 stage's sequence (the deterministic sampler), the int8 graph picks the same token on most
    steps (its logits differ by quantization noise, not structure)."""
    from runtime.llm_v1 import V1LLMStage

    fp32, int8 = V1LLMStage(v1_pack[0]), V1LLMStage(v1_pack[0], graph="llm.int8")
    m = modes["zero_shot"]
    ref = ours(fp32, m, no_repeat)
    eos = fp32.facts["eos_token"]
    x = int8.lm_input(m.text, m.prompt_text, m.prompt_speech, m.embedding)
    step = int8.stepper(x.shape[1] + len(ref))
    logits, agree = step(x), 0
    for i, token in enumerate(ref):
        agree += no_repeat(logits[0][:eos], ref[:i]) == token  # ref holds speech tokens only: rank those
        logits = step(int8.speech_embedding[token][None, None])
    assert len(ref) >= 60 and agree >= 0.9 * len(ref)
