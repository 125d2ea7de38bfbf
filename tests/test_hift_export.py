"""exporters/graphs/hift.py: the tiny bundle's HiFT exports through the shared pipeline and passes its cases;
the spec states what the runtime needs; the shared upstream model is left untouched."""

import json

import numpy as np
import onnx
import pytest
import torch

from specs.pack import Pack

pytestmark = pytest.mark.oracle


def test_registered():
    from exporters.graphs import REGISTRY
    from exporters.graphs.hift import HiftExporter

    assert REGISTRY["hift"] is HiftExporter


def test_export_passes_every_case(hift_pack):
    from backends.ort import check_onnx_file

    pack = Pack.open(hift_pack)
    rec = pack.manifest["graphs"]["hift"]
    assert rec["report"]["passed"]
    entry = pack.graph("hift")
    spec = entry.spec()
    vectors = entry.vectors()
    assert set(vectors) == {"first_chunk", "steady_chunk", "final_chunk"}
    results = check_onnx_file(entry.onnx_path, spec, vectors)  # re-run here, not only trusting the report
    assert all(c.passed for c in results), [c.line() for c in results if not c.passed]
    assert len(results) == 6


def test_spec_io_and_facts(hift_pack):
    spec = Pack.open(hift_pack).graph("hift").spec()
    assert spec.input_names == ["mel", "cache_source", "noise"]
    assert spec.output_names == ["audio", "source"]
    assert spec.input("mel").shape == [1, 80, "frames"]
    assert spec.input("cache_source").shape == [1, 1, "cache_samples"]
    assert spec.input("noise").shape == [1, "samples", 9]
    assert spec.output("audio").shape == [1, "samples"]
    assert spec.output("source").shape == [1, 1, "samples"]
    assert spec.dims["samples"].derived_from == {"dim": "frames", "scale": 480, "offset": 0}
    assert (spec.dims["cache_samples"].min, spec.dims["cache_samples"].max) == (0, 3840)
    assert [(c.input, c.output, c.first_call) for c in spec.caches] == [("cache_source", "source", "zero-length")]
    f = spec.facts
    assert (f["sample_rate"], f["samples_per_mel_frame"], f["harmonics"]) == (24000, 480, 9)
    assert (f["mel_cache_len"], f["source_cache_len"]) == (8, 3840)
    assert f["noise"]["distribution"] == "standard_normal"
    assert all(t.reason for t in spec.tolerances.values())


def test_case_shapes_and_first_chunk_is_zero_length(hift_pack):
    vectors = Pack.open(hift_pack).graph("hift").vectors()
    ins = {case: v[0] for case, v in vectors.items()}
    assert ins["first_chunk"]["cache_source"].shape == (1, 1, 0)
    assert ins["first_chunk"]["mel"].shape == (1, 80, 50)
    assert ins["steady_chunk"]["cache_source"].shape == (1, 1, 3840)
    assert ins["steady_chunk"]["mel"].shape == (1, 80, 108)
    assert ins["final_chunk"]["mel"].shape[2] % 2 == 1
    # the steady call's cache is the first call's source tail, and its mel starts with the first call's last 8
    first_out = vectors["first_chunk"][1]
    np.testing.assert_array_equal(ins["steady_chunk"]["cache_source"], first_out["source"][:, :, -3840:])
    np.testing.assert_array_equal(ins["steady_chunk"]["mel"][:, :, :8], ins["first_chunk"]["mel"][:, :, -8:])
    for i, o in vectors.values():
        assert o["audio"].shape == (1, 480 * i["mel"].shape[2])
        # upstream overwrote the start of the source with the cache, exactly
        c = i["cache_source"].shape[2]
        np.testing.assert_array_equal(o["source"][:, :, :c], i["cache_source"])


def test_graph_has_no_stft_or_random_ops_and_explains_itself(hift_pack):
    path = Pack.open(hift_pack).graph("hift").onnx_path
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"STFT", "DFT", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}, ops
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["cosyvoice_pack.graph"] == "hift"
    assert json.loads(meta["cosyvoice_pack.fact.source_cache_len"]) == 3840


def test_export_does_not_mutate_the_shared_model(tiny_model):
    """fold_weight_norm works on a copy: the shared upstream HiFT keeps its weight-norm parametrizations and
    gives the same output afterwards (torch's remove_parametrizations on a plain deepcopy would break it)."""
    import torch.nn.utils.parametrize as parametrize

    from exporters.graphs.hift import HiftExporter
    from exporters.oracles.hift import upstream_hift

    hift = tiny_model.hift
    g = np.random.default_rng(0)
    mel = (-5 + g.standard_normal((1, 80, 20))).astype(np.float32)
    noise = g.standard_normal((1, 20 * 480, 9)).astype(np.float32)
    cache = np.zeros((1, 1, 0), np.float32)
    before = upstream_hift(hift, mel, cache, noise)
    n_param = sum(parametrize.is_parametrized(m) for m in hift.modules())
    wrapper = HiftExporter().wrapper(tiny_model)
    assert n_param > 0 and sum(parametrize.is_parametrized(m) for m in hift.modules()) == n_param
    assert not any(parametrize.is_parametrized(m) for m in wrapper.modules())
    after = upstream_hift(hift, mel, cache, noise)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    with torch.no_grad():  # and the folded copy computes the same F0 as the parametrized original
        torch.testing.assert_close(
            wrapper.hift.f0_predictor(torch.from_numpy(mel)),
            hift.f0_predictor(torch.from_numpy(mel)),
            rtol=0,
            atol=1e-5,
        )
