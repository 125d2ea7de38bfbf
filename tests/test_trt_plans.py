"""Plans in a pack without TensorRT: engine planning, metadata schema, atomic commit, verified reading,
and the runtime's refusal of plans built for another GPU / TensorRT / graph."""

from __future__ import annotations

import json
import shutil

import pytest

from backends.trt_plan import check_plan, find_plan, open_plan, plan_mismatches, read_plan, select_profile
from specs.errors import ToolError
from specs.pack import MANIFEST, Pack, write_manifest
from tests.support.trt_fakes import commit_fake_plan, fake_host, make_fake_pack
from trt.plan_store import commit_plan
from trt.plans import plan_engines
from trt.validate import check_plans


@pytest.fixture
def pack_dir(tmp_path):
    return make_fake_pack(tmp_path / "pack")


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- planning ---------------------------------------------------------------------------------------------------
def test_plan_engines_matrix(tiny_pack):
    pack = Pack.open(tiny_pack)
    plans = plan_engines(pack, precisions=["fp16", "fp32"])
    names = [e.name for e in plans.engines]
    assert "flow.decoder.estimator.fp16.stream" in names and "flow.decoder.estimator.fp32.offline" in names
    if pack.has_graph("llm"):  # chunk-independent: one plan, not one per chunk
        assert [n for n in names if n.startswith("llm.")] == ["llm.fp16.any", "llm.fp32.any"]
    only = plan_engines(pack, ["estimator"], ["fp32"], ["stream"])
    assert [e.name for e in only.engines] == ["flow.decoder.estimator.fp32.stream"]
    assert only.engines[0].plan_rel == "trt/flow.decoder.estimator.fp32.stream.plan"
    assert only.engines[0].keep is None and plans.engines[0].keep is not None


def test_unknown_graph_and_variant_refused(pack_dir):
    pack = Pack.open(pack_dir)
    with pytest.raises(ToolError, match="pack has no graph 'hift'.*graphs in this pack: toy"):
        plan_engines(pack, ["hift"])
    manifest = json.loads((pack_dir / MANIFEST).read_text())
    manifest["graphs"]["toy.fp16"] = {**manifest["graphs"]["toy"], "precision": "fp16", "variant_of": "toy"}
    write_manifest(pack_dir / "manifest.json", manifest)
    pack = Pack.open(pack_dir)
    assert [e.graph for e in plan_engines(pack).engines] == ["toy"]  # variants are not sources
    with pytest.raises(ToolError, match="built from the fp32 graph: --graphs toy --precision fp16"):
        plan_engines(pack, ["toy.fp16"])


def test_unknown_max_dim_refused(pack_dir):
    with pytest.raises(ToolError, match="no planned graph has dim"):
        plan_engines(Pack.open(pack_dir), max_dims={"frames": 10})


# ---- commit and read --------------------------------------------------------------------------------------------
def test_commit_registers_plan_and_metadata(pack_dir):
    plan = commit_fake_plan(pack_dir)
    pack = Pack.open(pack_dir)  # schema-valid manifest
    rec = pack.manifest["plans"]["toy.fp16.any"]
    assert rec["file"] == "trt/toy.fp16.any.plan" and rec["meta"] == "trt/toy.fp16.any.json"
    assert (rec["graph"], rec["precision"], rec["chunk"]) == ("toy", "fp16", "any")
    pack.verify()  # the plan is hashed like every other file
    rec2, meta = read_plan(pack, plan.name)
    assert meta["gpu"] == {"name": "NVIDIA H200", "compute_capability": "9.0"}
    assert meta["source_onnx_sha256"] == pack.graph("toy").record["sha256"]
    assert meta["fp32_layers"] == ["/a/Softmax"] and meta["fp32_rules"]["ops"]
    assert [p["name"] for p in meta["profiles"]] == ["all_calls", "all_calls.c_empty"]
    assert meta["profiles"][1]["shapes"]["cache"] == {"min": [1, 0], "opt": [1, 0], "max": [1, 0]}
    assert meta["zero_length"][0]["profiles"] == ["all_calls.c_empty"]
    assert not list(pack_dir.rglob("*.tmp-*"))


def test_failed_commit_leaves_pack_unchanged(pack_dir):
    pack = Pack.open(pack_dir)
    plan = plan_engines(pack).engines[0]
    before = snapshot(pack_dir)
    plan.source_sha256 = "0" * 64  # the graph "changed" while the plan was built
    with pytest.raises(ToolError, match="changed while its plan was built"):
        commit_plan(pack_dir, plan, b"engine", {"whatever": 1})
    after = {k: v for k, v in snapshot(pack_dir).items() if k.name != ".tts-build-trt.lock"}
    assert after == {k: v for k, v in before.items() if k.name != ".tts-build-trt.lock"}


def test_invalid_metadata_never_reaches_the_pack(pack_dir):
    from specs.chunk_policy import ChunkPolicy
    from trt.plan_store import make_meta

    pack = Pack.open(pack_dir)
    plan = plan_engines(pack).engines[0]
    with pytest.raises(ToolError, match="metadata of plan toy.fp16.any"):
        make_meta(
            plan,
            fake_host(gpu_name=""),
            ChunkPolicy.from_manifest(pack.audio),
            built_onnx_sha256="x",
            fp32_nodes=[],
            flags=[],
            workspace_bytes=0,
            build_seconds=0,
            tolerances={},
            validation=None,
        )


@pytest.mark.parametrize("target", ["plan", "json"])
def test_tampered_plan_or_metadata_refused(pack_dir, target):
    commit_fake_plan(pack_dir)
    (pack_dir / f"trt/toy.fp16.any.{target}").write_bytes(b"tampered")
    with pytest.raises(ToolError, match="modified after tts-build-trt; rebuild: tts-build-trt --pack"):
        read_plan(Pack.open(pack_dir), "toy.fp16.any")


# ---- the runtime's refusal ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "host_kwargs, field",
    [
        ({"gpu_name": "NVIDIA A100-SXM4-80GB", "cc": "8.0"}, "GPU name"),
        ({"cc": "9.1"}, "GPU compute capability"),
        ({"trt_version": "11.4.0.106"}, "TensorRT version"),
    ],
)
def test_mismatched_host_refused_with_rebuild_command(pack_dir, host_kwargs, field):
    commit_fake_plan(pack_dir)
    pack = Pack.open(pack_dir)
    with pytest.raises(ToolError) as e:
        check_plan(pack, "toy.fp16.any", fake_host(**host_kwargs))
    msg = e.value.message
    assert field in msg and "plan does not match" in msg
    assert f"tts-build-trt --pack {pack_dir} --graphs toy --precision fp16" in msg
    check_plan(pack, "toy.fp16.any", fake_host())  # the build host itself is accepted


def test_stale_source_graph_refused(pack_dir):
    commit_fake_plan(pack_dir)
    manifest = json.loads((pack_dir / MANIFEST).read_text())
    (pack_dir / "toy.onnx").write_bytes(b"re-exported graph")  # a re-export changes the graph hash
    from specs.pack import sha256_file

    manifest["graphs"]["toy"]["sha256"] = sha256_file(pack_dir / "toy.onnx")
    write_manifest(pack_dir / "manifest.json", manifest)
    with pytest.raises(ToolError, match="source ONNX sha256: plan built from"):
        check_plan(Pack.open(pack_dir), "toy.fp16.any", fake_host())
    _, meta = read_plan(Pack.open(pack_dir), "toy.fp16.any")
    assert plan_mismatches(meta, fake_host(), manifest["graphs"]["toy"]["sha256"])[0].startswith("source ONNX")


def test_open_plan_without_tensorrt_says_what_to_install(pack_dir):
    from backends.trt_host import HostInfo

    commit_fake_plan(pack_dir)
    no_trt = HostInfo(None, None, None, ("TensorRT is not installed (x)", "no NVIDIA driver (y)"))
    with pytest.raises(ToolError, match="cannot load TensorRT plans here.*pip install 'tensorrt-cu13"):
        open_plan(Pack.open(pack_dir), "toy", "fp16", "stream", host=no_trt)
    with pytest.raises(ToolError, match="pack has no fp32 plan for toy"):
        open_plan(Pack.open(pack_dir), "toy", "fp32", "stream", host=no_trt)


def test_find_and_select_profile(pack_dir):
    commit_fake_plan(pack_dir)
    pack = Pack.open(pack_dir)
    assert find_plan(pack, "toy", "fp16", "stream") == "toy.fp16.any"  # chunk-independent plan
    _, meta = read_plan(pack, "toy.fp16.any")
    assert select_profile(meta, {"n": 5, "c": 4}) == 0
    assert select_profile(meta, {"n": 5, "c": 0}) == 1  # zero-length cache: the pinned profile
    assert select_profile(meta, {"n": 65, "c": 4}) is None


# ---- tts-validate hook ----------------------------------------------------------------------------------------------
def test_check_plans_without_tensorrt_checks_files_and_notes(pack_dir):
    from backends.trt_host import HostInfo

    commit_fake_plan(pack_dir)
    no_trt = HostInfo(None, None, None, ("TensorRT is not installed",))
    notes = []
    assert check_plans(Pack.open(pack_dir), log=notes.append, host=no_trt) == []
    assert "checked (hashes, metadata, source graph) but not run" in notes[0]
    (pack_dir / "trt/toy.fp16.any.plan").write_bytes(b"tampered")
    [c] = check_plans(Pack.open(pack_dir), log=notes.append, host=no_trt)
    assert not c.passed and c.label == "plan:toy.fp16.any" and "sha256" in c.problem


def test_check_plans_on_another_gpu_fails_without_running(pack_dir):
    commit_fake_plan(pack_dir)
    [c] = check_plans(Pack.open(pack_dir), log=lambda m: None, host=fake_host(gpu_name="NVIDIA L4", cc="8.9"))
    assert not c.passed and "GPU name" in c.problem and "rebuild on this host" in c.problem
    assert c.line().startswith("FAILED | plan:toy.fp16.any |")


def test_copy_of_pack_keeps_plans_valid(pack_dir, tmp_path):
    commit_fake_plan(pack_dir)
    copy = tmp_path / "copy"
    shutil.copytree(pack_dir, copy)
    check_plan(Pack.open(copy), "toy.fp16.any", fake_host())  # relative paths only
