"""flow.encoder: the exported graph reproduces upstream's pre-ODE computation on every case, and its
`streaming` / `finalize` / `context` inputs act as upstream's streaming flags do."""

import numpy as np
import pytest

from backends.ort import OrtRunner
from specs.compare import check_vectors
from specs.pack import Pack

pytestmark = pytest.mark.oracle

CASES = {"offline", "first_chunk", "first_chunk_prompt", "steady_chunk", "final_chunk"}


@pytest.fixture(scope="module")
def encoder(tiny_pack):
    entry = Pack.open(tiny_pack).graph("flow.encoder")
    return OrtRunner(entry.onnx_path, entry.spec()), entry.vectors()


def test_export_passes_every_case(encoder):
    session, vectors = encoder
    assert set(vectors) == CASES
    results = check_vectors(session, vectors)
    assert results and all(c.passed for c in results), [c.line() for c in results if not c.passed]


def test_spec_declares_the_call_protocol_and_limits(tiny_pack, tiny_model):
    from exporters.graphs.flow_encoder import rel_pos_max_tokens

    spec = Pack.open(tiny_pack).graph("flow.encoder").spec()
    assert spec.input_names == ["token", "context", "finalize", "streaming", "embedding", "prompt_feat"]
    assert spec.output_names == ["mu", "spks", "cond"]
    assert spec.dims["frames"].derived_from == {"dim": "tokens", "scale": 2, "offset": 0}
    assert spec.dims["prompt_frames"].min == 0
    # Rel-pos tables are built for 5000 positions: 2 * tokens <= 5000 in the up-encoder.
    assert tiny_model.flow.encoder.up_embed.pos_enc.pe.shape[1] == 2 * 5000 - 1
    assert rel_pos_max_tokens(tiny_model) == 2500 == spec.facts["rel_pos_max_tokens"]
    assert spec.dims["tokens"].max == 1500  # capped so frames fit the estimator's 3000
    assert spec.facts["pre_lookahead_len"] == 3 and spec.facts["call_protocol"] == "prefix_recompute"
    assert (spec.facts["encoder_static_chunk_size"], spec.facts["up_encoder_static_chunk_size"]) == (25, 50)


def test_first_chunk_without_prompt_runs_with_zero_prompt_frames(encoder):
    session, vectors = encoder
    ins, outs = vectors["first_chunk"]
    assert ins["prompt_feat"].shape == (1, 0, 80)
    got = session.run(ins)
    assert got["mu"].shape == (1, 80, 50) and not got["cond"].any()


def test_finalize_ignores_context_and_streaming_uses_it(encoder):
    session, vectors = encoder
    final, _ = vectors["final_chunk"]
    other = dict(final, context=(final["context"] + 1) % 6561)
    np.testing.assert_array_equal(session.run(final)["mu"], session.run(other)["mu"])

    steady, _ = vectors["steady_chunk"]
    other = dict(steady, context=(steady["context"] + 1) % 6561)
    assert np.abs(session.run(steady)["mu"] - session.run(other)["mu"]).max() > 1e-2


def test_streaming_flag_selects_chunk_masks(encoder):
    """Block-causal chunks change mu once the prefix spans several chunks, and never inside one chunk."""
    session, vectors = encoder
    steady, _ = vectors["steady_chunk"]  # 100 tokens: 4 chunks
    full = dict(steady, streaming=np.array([False]))
    assert np.abs(session.run(steady)["mu"] - session.run(full)["mu"]).max() > 1e-3
    one_chunk, _ = vectors["first_chunk"]  # 25 tokens: 1 chunk
    full = dict(one_chunk, streaming=np.array([False]))
    np.testing.assert_allclose(session.run(one_chunk)["mu"], session.run(full)["mu"], atol=1e-6)


@pytest.mark.parametrize("n_tokens", [1, 2, 26, 77])
def test_odd_lengths_match_upstream(tiny_model, encoder, n_tokens):
    """Lengths outside the vectors (a single token, one past a chunk) against upstream, both modes."""
    from exporters.graphs.flow_encoder import upstream_pre_ode

    session, _ = encoder
    spec = session.spec
    rng = np.random.default_rng(n_tokens)
    for streaming, finalize in ((True, False), (False, True)):
        look = 0 if finalize else 3
        gen = rng.integers(0, 6561, (1, n_tokens + look))
        prompt = np.zeros((1, 0), np.int64)
        feat = np.zeros((1, 0, 80), np.float32)
        emb = rng.standard_normal((1, 192)).astype(np.float32)
        want = upstream_pre_ode(tiny_model, gen, prompt, feat, emb, streaming, finalize)
        context = np.zeros((1, 3), np.int64) if finalize else gen[:, -3:]
        got = session.run(
            {
                "token": gen[:, :n_tokens].astype(np.int64),
                "context": context.astype(np.int64),
                "finalize": np.array([finalize]),
                "streaming": np.array([streaming]),
                "embedding": emb,
                "prompt_feat": feat,
            }
        )
        for name in ("mu", "spks", "cond"):
            tol = spec.tolerances[name]
            np.testing.assert_allclose(got[name], want[name], atol=tol.atol, rtol=tol.rtol)
