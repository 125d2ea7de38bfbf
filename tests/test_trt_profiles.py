"""Profile derivation from the I/O specs alone: the four CosyVoice2 graphs' declared profiles in the tiny pack's
real specs (the exporters compute them from the chunk policy), the chunk schedule, min <= opt <= max
violations, --max-dim with sum dims, zero-length handling. No TensorRT needed."""

from __future__ import annotations

import pytest

from specs.chunk_policy import ChunkPolicy
from specs.errors import ToolError
from specs.io_spec import DimRange, ProfileSpec
from specs.pack import Pack
from tests.support.trt_fakes import CHUNK_POLICY, toy_spec
from trt.profiles import Profile, check_shapes, derive_profiles

POLICY = ChunkPolicy.from_manifest({"sample_rate": 24000, "chunk_policy": CHUNK_POLICY})


def ranges(gp):
    return {p.name: {d: (r.min, r.opt, r.max) for d, r in p.dims.items()} for p in gp.profiles}


@pytest.fixture(scope="module")
def pack(tiny_pack):
    return Pack.open(tiny_pack)


def spec_of(pack, graph):
    if not pack.has_graph(graph):
        pytest.skip(f"the tiny pack has no {graph} graph (its exporter is not registered)")
    return pack.graph(graph).spec()


# ---- the chunk schedule ------------------------------------------------------------------------------------------
def test_schedule_matches_upstream():
    assert POLICY.tokens_per_second == 25
    assert POLICY.hops(0, 5) == [25, 50, 100, 100, 100]
    assert POLICY.hops(17, 3) == [33, 50, 100]  # prompt pad 8 on the first hop
    assert POLICY.steady_prefix_tokens(75) == 75 + 25 + 50 + 100
    assert POLICY.final_only_max_tokens == 25 + 24 + 2
    assert POLICY.final_after_chunks_tokens == (3, 102)


def test_policy_from_pack_manifest(pack):
    assert ChunkPolicy.from_manifest(pack.audio) == POLICY


def test_missing_chunk_policy_is_named():
    with pytest.raises(ToolError, match="token_hop_len"):
        ChunkPolicy.from_manifest({"sample_rate": 24000, "chunk_policy": {}})


def test_chunk_policy_cross_field_rules():
    bad = {**CHUNK_POLICY, "source_cache_len": 100}
    with pytest.raises(ToolError, match="source_cache_len 100 != mel_cache_len 8 x samples_per_mel_frame 480"):
        ChunkPolicy.from_manifest({"sample_rate": 24000, "chunk_policy": bad})
    with pytest.raises(ToolError, match="token_hop_len 30 / token_max_hop_len 20"):
        ChunkPolicy.from_manifest(
            {"sample_rate": 24000, "chunk_policy": {**CHUNK_POLICY, "token_hop_len": 30, "token_max_hop_len": 20}}
        )
    # packs written before `vocoder` existed read as CosyVoice2's cached vocoder
    read = ChunkPolicy.from_manifest({"sample_rate": 24000, "chunk_policy": CHUNK_POLICY})
    assert read.to_dict() == {**CHUNK_POLICY, "vocoder": "cached"}
    with pytest.raises(ToolError, match="a recomputing vocoder has no caches and no cross-fade"):
        ChunkPolicy.from_manifest({"sample_rate": 24000, "chunk_policy": {**CHUNK_POLICY, "vocoder": "recompute"}})


# ---- the four graphs ----------------------------------------------------------------------------------------------
def test_estimator(pack):
    spec = spec_of(pack, "flow.decoder.estimator")
    stream, offline = (derive_profiles(spec, c) for c in ("stream", "offline"))
    # min: final-only call of a 1-token stream; opt: first max-hop call after a 3 s prompt; max: the graph's
    assert ranges(stream) == {"all_calls": {"frames": (2, 500, 3000)}}
    assert ranges(offline) == {"all_calls": {"frames": (2, 650, 3000)}}
    shapes = stream.profiles[0].shapes(spec)
    assert shapes["x"] == {"min": [2, 80, 2], "opt": [2, 80, 500], "max": [2, 80, 3000]}
    assert set(shapes) == {"x", "mask", "mu", "cond"}  # t, spks, streaming are static
    assert stream.zero_length == []


def test_hift_stream_splits_first_chunk(pack):
    spec = spec_of(pack, "hift")
    gp = derive_profiles(spec, "stream")
    r = ranges(gp)
    assert r["first_chunk"]["cache_samples"] == (0, 0, 0)
    assert r["first_chunk"]["frames"] == (2, 50, 102)
    assert r["later_chunks"]["cache_samples"] == (1, 3840, 3840)
    assert r["later_chunks"]["frames"] == (8 + 6, 8 + 200, 8 + 204)  # cache + 2 x (3..102) new tokens
    for prof in gp.profiles:  # noise samples follow frames exactly
        f, s = prof.dims["frames"], prof.dims["samples"]
        assert (s.min, s.opt, s.max) == (480 * f.min, 480 * f.opt, 480 * f.max)
    [zl] = gp.zero_length
    assert (zl.dim, zl.handling, zl.profiles, zl.tensors) == (
        "cache_samples",
        "profile",
        ["first_chunk"],
        ["cache_source[2]"],
    )


def test_hift_offline_is_one_zero_cache_call(pack):
    gp = derive_profiles(spec_of(pack, "hift"), "offline")
    assert ranges(gp)["utterance"]["cache_samples"] == (0, 0, 0)
    assert ranges(gp)["utterance"]["frames"] == (2, 500, 3000)


def test_flow_encoder(pack):
    spec = spec_of(pack, "flow.encoder")
    stream, offline = (ranges(derive_profiles(spec, c)) for c in ("stream", "offline"))
    top = spec.dims["tokens"].max
    assert stream["no_prompt"] == {"tokens": (1, 175, top), "prompt_frames": (0, 0, 0)}
    assert stream["with_prompt"]["tokens"] == (1, 250, top)
    assert stream["with_prompt"]["prompt_frames"] == (1, 150, spec.dims["prompt_frames"].max)
    assert offline["with_prompt"]["tokens"] == (1, 325, top)
    for prof in stream.values():  # prompt_frames <= frames = 2 * tokens at every corner
        assert all(prof["prompt_frames"][i] <= 2 * prof["tokens"][i] for i in range(3))


def test_llm_prefill_and_decode(pack):
    spec = spec_of(pack, "llm")
    gp = derive_profiles(spec, "any")
    r = ranges(gp)
    pre, dec = r["prefill"], r["decode"]
    assert pre["past_sequence_length"] == (0, 0, 0)
    assert pre["sequence_length"] == (1, 2 + 50 + 75, 1024)
    assert dec["sequence_length"] == (1, 1, 64)
    assert dec["total_sequence_length"][2] == 4096
    for prof in (pre, dec):  # total = past + new at min, opt and max (profiles are boxes)
        assert all(
            prof["total_sequence_length"][i] == prof["past_sequence_length"][i] + prof["sequence_length"][i]
            for i in range(3)
        )
    assert [z.dim for z in gp.zero_length] == ["past_sequence_length"]


def test_llm_max_dim_keeps_total_consistent(pack):
    spec = spec_of(pack, "llm")
    dec = ranges(derive_profiles(spec, "any", max_dims={"past_sequence_length": 8191}))["decode"]
    assert dec["past_sequence_length"][2] == 8191 and dec["total_sequence_length"][2] == 8191 + 64


def test_every_graph_declares_what_trt_needs(pack):
    """trt/ reads only specs: every graph of the pack declares roles, profiles per chunk mode and an fp16 policy."""
    for name in pack.graph_names():
        if "variant_of" in pack.manifest["graphs"][name]:
            continue
        spec = pack.graph(name).spec()
        assert all(d.role for d in spec.dims.values()), name
        assert spec.profiles and set(spec.profiles) <= {"stream", "offline", "any"}, name
        fp16 = spec.precisions["fp16"]
        assert fp16.offered_on("tensorrt") and set(fp16.tolerances) == set(spec.output_names), name


# ---- generic rules, violations, zero length ---------------------------------------------------------------------
def test_profile_naming_no_dim_uses_spec_and_splits_zero_length():
    gp = derive_profiles(toy_spec(), "any")
    assert ranges(gp) == {
        "all_calls": {"n": (1, 8, 64), "c": (1, 4, 16)},
        "all_calls.c_empty": {"n": (1, 8, 64), "c": (0, 0, 0)},
    }
    assert gp.zero_length[0].handling == "profile"


def test_zero_length_ort_drops_pinned_profiles(pack):
    gp = derive_profiles(toy_spec(), "any", zero_length="ort")
    assert ranges(gp) == {"all_calls": {"n": (1, 8, 64), "c": (1, 4, 16)}}
    assert gp.zero_length[0].handling == "ort" and "ONNX Runtime" in gp.zero_length[0].note
    hift = derive_profiles(spec_of(pack, "hift"), "stream", zero_length="ort")
    assert [p.name for p in hift.profiles] == ["later_chunks"]
    assert derive_profiles(spec_of(pack, "hift"), "offline", zero_length="ort").profiles == []


def test_min_opt_max_violation_names_the_offender():
    spec = toy_spec(profiles={"any": [ProfileSpec("calls", "broken", {"n": DimRange(40, 20, 64)})]})
    with pytest.raises(ToolError) as e:
        derive_profiles(spec, "any")
    msg = e.value.message
    assert "toy (any) profile 'calls'" in msg and "dim 'n'" in msg and "x[1]" in msg and "40/20/64" in msg


def test_bad_declared_profile_names_graph_dim_and_inputs(pack):
    spec = spec_of(pack, "flow.decoder.estimator")
    spec.profiles = {"stream": [ProfileSpec("all_calls", "broken", {"frames": DimRange(600, 500, 3000)})]}
    with pytest.raises(ToolError, match=r"dim 'frames' \(inputs x\[2\], mask\[2\].*600/500/3000"):
        derive_profiles(spec, "stream")


def test_tensor_axis_violation_is_named():
    spec = toy_spec()
    bad = Profile("broken", {"n": DimRange(5, 3, 9), "c": DimRange(0, 0, 0)})
    with pytest.raises(ToolError, match=r"input 'x' axis 1 \(n\) has min/opt/max 5/3/9"):
        check_shapes(spec, bad, "toy profile 'broken'")


def test_max_dim_beyond_graph_is_refused(pack):
    with pytest.raises(ToolError, match="declares frames <= 3000"):
        derive_profiles(spec_of(pack, "flow.decoder.estimator"), "stream", max_dims={"frames": 5000})


def test_rule_range_clipped_to_graph_with_note():
    spec = toy_spec()
    spec.profiles = {"any": [ProfileSpec("calls", "too wide", {"n": DimRange(1, 8, 100)})]}  # beyond the declared 64
    gp = derive_profiles(spec, "any")
    assert ranges(gp)["calls"]["n"] == (1, 8, 64)
    assert any("clipped" in n for n in gp.notes)
