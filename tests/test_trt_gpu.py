"""Real TensorRT builds of the tiny pack (FP32 and FP16), validated against ONNX Runtime, loaded by the
runtime's loader. Skipped without TensorRT, Polygraphy and an NVIDIA GPU (never run on the CPU hosts)."""

from __future__ import annotations

import shutil

import pytest

from backends.trt_host import probe_host

HOST = probe_host()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not HOST.can_run, reason="needs TensorRT, Polygraphy and an NVIDIA GPU: " + "; ".join(HOST.problems)
    ),
]


@pytest.fixture
def pack_copy(tiny_pack, tmp_path):
    return shutil.copytree(tiny_pack, tmp_path / "pack")


@pytest.mark.parametrize(
    "graph, chunk",
    [("flow.decoder.estimator", "stream"), ("hift", "stream"), ("flow.encoder", "offline"), ("llm", "any")],
)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_validate_load(pack_copy, graph, chunk, precision):
    from backends.trt_plan import open_plan
    from specs.pack import Pack
    from trt.build import build_plans
    from trt.plans import plan_engines
    from trt.validate import check_plans

    pack = Pack.open(pack_copy)
    if not pack.has_graph(graph):
        pytest.skip(f"tiny pack has no {graph}")
    plans = plan_engines(pack, [graph], [precision], [chunk] if chunk != "any" else ["stream"])
    done = build_plans(pack_copy, plans.engines, workspace_gib=2, log=print)
    assert done == [plans.engines[0].name]
    pack = Pack.open(pack_copy)
    pack.verify()
    comps = check_plans(pack, log=print)
    assert comps and all(c.passed for c in comps), "\n".join(c.line() for c in comps)
    case, (inputs, _) = next(iter(pack.graph(graph).vectors().items()))
    with open_plan(pack, graph, precision, chunk) as runner:
        if runner.profile_for(inputs) is not None:
            out = runner.infer(inputs)
            assert set(out) == set(pack.graph(graph).spec().output_names)
