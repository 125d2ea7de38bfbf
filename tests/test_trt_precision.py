"""The one fp16 converter (backends/fp16.py) and the graphs' fp16 policies, checked on CPU: keep rules resolved
on real graphs, the mixed-precision ONNX (fp32 I/O, kept nodes fp32) running on ONNX Runtime, tolerances."""

from __future__ import annotations

import numpy as np
import pytest

from backends.fp16 import make_mixed_onnx, resolve_fp32_nodes
from specs.pack import Pack
from specs.precision import Fp32Keep
from tests.support.trt_fakes import toy_spec
from trt.plans import plan_tolerances

onnx = pytest.importorskip("onnx")


def test_tolerances_per_precision(tiny_pack):
    spec = toy_spec()
    assert plan_tolerances(spec, "fp32") == spec.tolerances
    assert plan_tolerances(spec, "fp16") == spec.precisions["fp16"].tolerances
    pack = Pack.open(tiny_pack)
    for graph in ("flow.decoder.estimator", "hift", "flow.encoder", "llm"):
        for tol in plan_tolerances(pack.graph(graph).spec(), "fp16").values():
            assert len(tol.reason) > 40, graph  # every fp16 budget says why


def test_trig_arguments_rule_keeps_sin_and_its_argument():
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Mul", ["t", "k"], ["arg"], name="scale"),
        helper.make_node("Sin", ["arg"], ["s"], name="sin"),
        helper.make_node("MatMul", ["s", "w"], ["y"], name="proj"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "tkw"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    assert resolve_fp32_nodes(helper.make_model(g), Fp32Keep(trig_arguments=True)) == ["scale", "sin"]


def test_paths_rule_keeps_the_magnitude_path():
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Conv", ["x", "w"], ["h"], name="conv"),
        helper.make_node("Exp", ["h"], ["m"], name="exp"),
        helper.make_node("Mul", ["m", "h"], ["p"], name="polar"),
        helper.make_node("Relu", ["h"], ["side"], name="side"),
        helper.make_node("Div", ["p", "env"], ["audio"], name="envelope"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "w", "env")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("audio", "side")],
    )
    keep = Fp32Keep(paths=(("Exp", "audio"),), name_patterns=(r"^si",))
    assert resolve_fp32_nodes(helper.make_model(g), keep) == ["envelope", "exp", "polar", "side"]


def test_kept_nodes_read_fp32_inputs_and_fp32_neighbours_unrounded(tmp_path):
    """A sinusoidal embedding kept fp32 must see t as given (fp32), and a kept chain must not be rounded to fp16
    between its nodes: ORT's converter alone casts t to fp16 first (t = 0.691 -> 0.6909: 0.24 rad at 1000 t)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Mul", ["t", "k"], ["arg"], name="scale"),
        helper.make_node("Sin", ["arg"], ["s"], name="sin"),
        helper.make_node("Mul", ["s", "g"], ["sg"], name="gain"),  # fp16: the value the rest of the net sees
        helper.make_node("Add", ["sg", "x"], ["y"], name="mix"),
    ]
    inits = [numpy_helper.from_array(np.array([1000.0], np.float32), "k"),
             numpy_helper.from_array(np.array([1.0], np.float32), "g")]  # fmt: skip
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("t", "x")],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, [4]),
        ],
        inits,
    )
    src = tmp_path / "emb.onnx"
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(src))
    mixed = make_mixed_onnx(src, tmp_path / "emb16.onnx", Fp32Keep(trig_arguments=True))
    assert mixed.fp32_nodes == ["scale", "sin"]
    t = np.array([0.1, 0.3, 0.691, 0.93], np.float32)
    s, _ = ort.InferenceSession(str(mixed.path), providers=["CPUExecutionProvider"]).run(
        ["s", "y"], {"t": t, "x": np.zeros(4, np.float32)}
    )
    exact = np.sin(np.float32(1000.0) * t)
    assert np.abs(s - exact).max() < 1e-5  # fp16-rounded t: errors up to 0.24


def test_mixed_onnx_of_tiny_estimator(tiny_pack, tmp_path):
    pack = Pack.open(tiny_pack)
    entry = pack.graph("flow.decoder.estimator")
    mixed = make_mixed_onnx(entry.onnx_path, tmp_path / "mixed.onnx", entry.spec().precisions["fp16"].fp32_keep)
    model = onnx.load(str(mixed.path))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(model.graph.input) + list(model.graph.output)}
    assert set(types.values()) <= {onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL}  # fp32 I/O kept
    assert any(n.endswith("Softmax") or "Softmax" in n for n in mixed.fp32_nodes)
    assert any("time_embeddings" in n for n in mixed.fp32_nodes)
    inits = [t.data_type for t in model.graph.initializer]
    assert onnx.TensorProto.FLOAT16 in inits  # weights really went fp16
    import onnxruntime as ort

    sess = ort.InferenceSession(str(mixed.path), providers=["CPUExecutionProvider"])
    inputs, expected = entry.vectors()["final_chunk"]  # ODE step 8: t = 0.69
    got = sess.run(None, inputs)[0]
    assert np.isfinite(got).all()
    # Not a TensorRT accuracy claim: ORT-CPU's fp16 path shows the mixed graph is sane, and that t reaches the
    # time embedding unrounded (with t rounded to fp16 this case erred by ~0.2).
    assert np.abs(got - expected["velocity"]).max() < 0.05
