"""FP16 plan inputs that can be checked on CPU: FP32-keep rules resolved on real graphs, the mixed-precision
ONNX (fp32 I/O, kept nodes fp32) running on ONNX Runtime, and the FP16 tolerances."""
from __future__ import annotations

import numpy as np
import pytest

from specs.pack import Pack
from trt.precision import FP16_TOLERANCES, Fp32Keep, fp32_keep, make_mixed_onnx, plan_tolerances, resolve_fp32_nodes
from tests.test_trt_fakes import toy_spec

onnx = pytest.importorskip("onnx")


def test_tolerances_per_precision():
    spec = toy_spec()
    assert plan_tolerances(spec, "fp32") == spec.tolerances
    fp16 = plan_tolerances(spec, "fp16")["y"]
    assert fp16.atol >= 5e-2 and fp16.rtol >= 2e-2 and "unmeasured" in fp16.reason
    for graph, table in FP16_TOLERANCES.items():
        for tol in table.values():
            assert len(tol.reason) > 40, graph  # every fp16 budget says why


def test_paths_rule_keeps_the_magnitude_path():
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], name="conv"),
             helper.make_node("Exp", ["h"], ["m"], name="exp"),
             helper.make_node("Mul", ["m", "h"], ["p"], name="polar"),
             helper.make_node("Relu", ["h"], ["side"], name="side"),
             helper.make_node("Div", ["p", "env"], ["audio"], name="envelope")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                       for n in ("x", "w", "env")],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("audio", "side")])
    keep = Fp32Keep(paths=(("Exp", "audio"),), name_patterns=(r"^si",))
    assert resolve_fp32_nodes(helper.make_model(g), keep) == ["envelope", "exp", "polar", "side"]


def test_mixed_onnx_of_tiny_estimator(tiny_pack, tmp_path):
    pack = Pack.open(tiny_pack)
    entry = pack.graph("flow.decoder.estimator")
    mixed = make_mixed_onnx(entry.onnx_path, tmp_path / "mixed.onnx", fp32_keep(entry.name))
    model = onnx.load(str(mixed.path))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(model.graph.input) + list(model.graph.output)}
    assert set(types.values()) <= {onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL}  # fp32 I/O kept
    assert any(n.endswith("Softmax") or "Softmax" in n for n in mixed.fp32_nodes)
    assert any("time_embeddings" in n for n in mixed.fp32_nodes)
    inits = [t.data_type for t in model.graph.initializer]
    assert onnx.TensorProto.FLOAT16 in inits  # weights really went fp16
    import onnxruntime as ort

    sess = ort.InferenceSession(str(mixed.path), providers=["CPUExecutionProvider"])
    case, (inputs, expected) = next(iter(entry.vectors().items()))
    got = sess.run(None, inputs)[0]
    assert np.isfinite(got).all()
    # Not a TensorRT accuracy claim: ORT-CPU's fp16 path only shows the mixed graph is sane.
    assert np.abs(got - expected["velocity"]).max() < 0.5
