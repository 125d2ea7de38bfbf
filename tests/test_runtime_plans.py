"""tts-run with TensorRT plans, on a CPU host: the runtime picks the pack's plans, refuses mismatched ones,
and sends calls no profile takes to ONNX Runtime. The plan runner is faked (no GPU/TensorRT here): it runs
the graph on ONNX Runtime and records the calls, so what is tested is the runtime's wiring and refusal
logic, not TensorRT itself (tests/test_trt_gpu.py does that on a GPU host)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from specs.errors import ToolError
from tests.support.trt_fakes import fake_host


class FakeRunner:
    """Stands in for backends.trt_plan.PlanRunner: same API, ORT underneath; rejects zero-length caches."""

    def __init__(self, pack, graph):
        from backends.ort import OrtRunner

        entry = pack.graph(graph)
        self.spec = entry.spec()
        self._ort = OrtRunner(entry.onnx_path, self.spec)
        self.infers = 0

    def __enter__(self):
        return self

    def profile_for(self, feed):
        return None if feed.get("cache_source", np.zeros(1)).size == 0 else 0

    def infer(self, feed):
        self.infers += 1
        return self._ort.run(feed)


@pytest.fixture
def plan_pack(tiny_pack, tmp_path):
    """The tiny pack with a (fake) fp16 stream plan for hift, committed through trt's real commit path."""
    from specs.pack import Pack
    from trt.plan_store import commit_plan, make_meta
    from trt.plans import plan_engines, plan_tolerances

    pack_dir = tmp_path / "pack"
    shutil.copytree(tiny_pack, pack_dir)
    pack = Pack.open(pack_dir)
    plan = next(e for e in plan_engines(pack, precisions=["fp16"], graphs=["hift"]).engines if e.chunk == "stream")
    meta = make_meta(
        plan,
        fake_host(),
        pack.chunk_policy,
        built_onnx_sha256=plan.source_sha256,
        fp32_nodes=[],
        flags=["STRONGLY_TYPED"],
        workspace_bytes=1 << 30,
        build_seconds=1.0,
        tolerances=plan_tolerances(plan.spec, "fp16"),
        validation=None,
        tool_version="test",
    )
    commit_plan(pack_dir, plan, b"fake engine", meta)
    return pack_dir


@pytest.fixture
def cpu_as_cuda(monkeypatch):
    """ONNX Runtime's CPU provider answers for 'cuda' (the fallback sessions), as on a GPU host."""
    import backends.ort as ort_session

    monkeypatch.setattr(ort_session, "providers_for", lambda device: ["CPUExecutionProvider"])


def test_runtime_uses_the_packs_plan_and_falls_back_per_call(plan_pack, cpu_as_cuda, monkeypatch):
    import backends.trt_plan
    from runtime.engine import PackEngine
    from runtime.session import TtsSession
    from specs.pack import Pack

    runners = []

    def open_plan(pack, graph, precision, chunk, host=None):
        assert (graph, precision, chunk) == ("hift", "fp16", "stream")
        runners.append(FakeRunner(pack, graph))
        return runners[-1]

    monkeypatch.setattr(backends.trt_plan, "open_plan", open_plan)
    engine = PackEngine(Pack.open(plan_pack), device="cuda", trt="auto")
    assert engine.trt == "fp16" and engine.plans_used == ["hift"]
    s = TtsSession(engine, seed=0, stream=True)
    s.push_tokens(np.arange(120) * 53 % 6561)
    assert sum(c.n_samples for c in s.chunks()) == 120 * 2 * 480
    # the first chunk (zero-length cache_source) went to ONNX Runtime, every later call to the plan
    assert engine.hift_session.calls["ort"] == 1 and engine.hift_session.calls["trt"] == runners[0].infers >= 2


def test_mismatched_plan_is_refused_with_the_rebuild_command(plan_pack, cpu_as_cuda, monkeypatch):
    import backends.trt_plan
    from runtime.engine import PackEngine
    from specs.pack import Pack

    monkeypatch.setattr(backends.trt_plan, "probe_host", lambda: fake_host(gpu_name="NVIDIA L4", cc="8.9"))
    with pytest.raises(ToolError) as e:
        PackEngine(Pack.open(plan_pack), device="cuda", trt="fp16")
    msg = str(e.value)
    assert "plan does not match GPU name: plan built on 'NVIDIA H200', this host has 'NVIDIA L4'" in msg
    assert "tts-build-trt --pack" in msg and "--graphs hift --precision fp16 --chunk stream" in msg


def test_plans_need_cuda_and_auto_stays_on_onnxruntime_on_cpu(plan_pack):
    from runtime.engine import PackEngine
    from specs.pack import Pack

    with pytest.raises(ToolError, match="TensorRT plans run on a CUDA GPU"):
        PackEngine(Pack.open(plan_pack), device="cpu", trt="fp16")
    engine = PackEngine(Pack.open(plan_pack), device="cpu", trt="auto")
    assert engine.trt is None and engine.plans_used == []
